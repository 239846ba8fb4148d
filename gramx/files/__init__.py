"""Files others may have touched: strict schemas for what gramx reads, atomic folders for what it writes."""
