"""What plugins provide (modalities, objectives, commands) and how gramx finds them (pluggy entry points)."""
