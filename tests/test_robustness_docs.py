"""docs/robustness.md is the tests' own record: every robustness case that ran is in
docs/robustness.json, field by field, as it was observed; the page's tables are rendered from that
record and from the code's serving limits. ``MMPC_WRITE_DOCS=1`` rewrites the record and the page."""

from __future__ import annotations

import pytest
import robustness

from mmpc.serving_input import Limits


def _problems(documented: list[robustness.Row], table: list[robustness.Row], observed: dict) -> list[str]:
    """What differs between the record and this run, field by field."""
    by_key = {r.key: r for r in documented}
    problems = []
    for key, row in observed.items():
        if key not in by_key:
            problems.append(f"- {row.area} / {row.case}: not in the record, observed {row}")
        else:
            problems += [f"- {row.area} / {row.case}: {d}" for d in by_key[key].differences(row)]
    kept = {r.key for r in table}
    problems += [f"- {r.area} / {r.case}: no test declares it" for r in documented if r.key not in kept]
    if not problems and documented != table:
        problems.append(f"- the order of the rows in {robustness.RECORD.name} differs")
    return problems


@pytest.mark.robustness_docs
def test_robustness_page_matches_the_tests(request):
    page = robustness.DOC.read_text()
    observed, declared = robustness.session_state(request.config)
    documented = robustness.read_record()
    table = robustness.merged(documented, observed, declared)
    new_page = robustness.render_page(page, table, Limits().describe())
    if robustness.write_requested():
        robustness.write_record(table)
        robustness.DOC.write_text(new_page)
        return
    problems = _problems(documented, table, observed)
    if page != robustness.render_page(page, documented, Limits().describe()):
        problems.append(f"- the page's tables are not those of {robustness.RECORD.name} and the limits")
    assert not problems, (
        f"{robustness.RECORD} and {robustness.DOC} do not match the tests; regenerate them with "
        f"{robustness.WRITE_ENV}=1 python -m pytest <the tests of those cases>:\n" + "\n".join(problems)
    )


def test_the_result_cell_is_the_status_then_the_detail():
    row = robustness.Row("serving", "a case", "400", "400", "row 0: 'designation' is empty")
    assert row.cells()[-1] == "400: row 0: 'designation' is empty"
    assert robustness.Row("training", "a case", "done", "pipeline FAILED").result == "pipeline FAILED"
    other = robustness.Row("serving", "a case", "400", "200", "1 prediction(s)")
    assert [d.split(":")[0] for d in row.differences(other)] == ["status", "detail"]
