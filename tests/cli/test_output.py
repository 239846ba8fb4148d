"""What the commands print: tables in aligned columns, and the evaluation report as tables."""

from __future__ import annotations

from gramx.cli.output import print_report, print_table


def test_a_table_aligns_each_column_under_its_header(capsys):
    print_table([["1", "r10", "0.8123", "a.npy"], ["12", "row-three", "0.5", ""]], ["rank", "id", "cosine", "values"])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["rank  id         cosine  values",
                     "----  ---------  ------  ------",
                     "1     r10        0.8123  a.npy",
                     "12    row-three  0.5"]  # no trailing spaces


def test_an_empty_table_is_its_header(capsys):
    print_table([], ["plugin", "status"])
    assert capsys.readouterr().out.splitlines() == ["plugin  status", "------  ------"]


def metrics(r1: float, medr: float) -> dict:
    return {"R@1": r1, "R@5": 60.0, "R@10": 100.0, "MedR": medr, "MeanR": 2.25, "mAP": 55.555}


def test_the_report_prints_its_size_metrics_and_zero_shot(capsys):
    report = {"tuples": 12, "score": "volume", "retrieval": {"text->vector": metrics(50.0, 1.5)},
              "nway": {"text->(point,vector)": metrics(41.6667, 2.0)}, "nway_cosine": {},
              "zeroshot": {"vector": 91.6667}}
    print_report(report)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "12 tuples" and lines[1] == ""
    assert lines[2].split() == ["kind", "query->candidates", "R@1", "R@5", "R@10", "MedR", "MeanR", "mAP"]
    assert lines[4].split() == ["retrieval", "text->vector", "50.00", "60.00", "100.00", "1.5", "2.25", "55.55"]
    assert lines[5].split() == ["nway", "text->(point,vector)", "41.67", "60.00", "100.00", "2", "2.25", "55.55"]
    assert lines[6:] == ["", "zero-shot  accuracy %", "---------  ----------", "vector     91.67"]


def test_a_report_without_metrics_prints_only_its_size(capsys):
    print_report({"tuples": 3, "score": "cosine", "retrieval": {}, "nway": {}, "nway_cosine": {}, "zeroshot": {}})
    assert capsys.readouterr().out == "3 tuples\n"
