"""The `mmpc` command line on catalogs: the report a person reads, and errors without tracebacks."""

from __future__ import annotations

from mmpc.cli import main
from mmpc.demo_catalog import write_demo_catalog


def test_demo_catalog_then_check(tmp_path, capsys):
    assert main(["demo-catalog", str(tmp_path / "cat"), "--size", "300", "--seed", "3"]) == 0
    assert main(["check", str(tmp_path / "cat"), "--manifest", str(tmp_path / "manifest")]) == 0
    out = capsys.readouterr().out
    assert "300 products, 300 with an image" in out and "fingerprint " in out
    assert (tmp_path / "manifest" / "split_manifest.csv").is_file()


def test_check_reports_a_broken_catalog_without_a_traceback(tmp_path, capsys):
    cat = write_demo_catalog(tmp_path / "cat", size=100, seed=1)
    y = cat / "Y_train_CVw08PX.csv"
    lines = y.read_text().splitlines()
    lines[5] = lines[5].split(",")[0] + ",999"
    y.write_text("\n".join(lines) + "\n")
    assert main(["check", str(cat)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "999" in err and "Traceback" not in err
