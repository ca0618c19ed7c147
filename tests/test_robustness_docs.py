"""docs/robustness.md is the tests' own record: every robustness case that ran is in its table as it
was observed, and the serving limits are the code's. ``MMPC_WRITE_DOCS=1`` rewrites both tables."""

from __future__ import annotations

import pytest
import robustness

from mmpc.serving_input import Limits


@pytest.mark.robustness_docs
def test_robustness_page_matches_the_tests(request):
    page = robustness.DOC.read_text()
    observed, declared = robustness.session_state(request.config)
    documented = robustness.read_rows(page)
    table = robustness.merged(documented, observed, declared)
    new_page = robustness.replace(
        page, robustness.LIMITS[0], robustness.render(robustness.LIMITS[1], Limits().describe())
    )
    new_page = robustness.replace(
        new_page,
        robustness.TABLE[0],
        robustness.render(robustness.TABLE[1], [(r.area, r.case, r.expected, r.result) for r in table]),
    )
    if robustness.write_requested():
        robustness.DOC.write_text(new_page)
        return
    by_key = {(r.area, r.case): r for r in documented}
    kept = {(r.area, r.case) for r in table}
    problems = [
        f"- {row.area} / {row.case}: documented {by_key.get(key)}, observed {row}"
        for key, row in observed.items()
        if by_key.get(key) != row
    ]
    problems += [
        f"- {area} / {name}: no test declares it" for area, name in by_key if (area, name) not in kept
    ]
    if page != new_page and not problems:
        problems.append("- the limits table or the order of the rows differs")
    assert not problems, (
        f"{robustness.DOC} does not match the tests; regenerate it with "
        f"{robustness.WRITE_ENV}=1 python -m pytest <the tests of those cases>:\n" + "\n".join(problems)
    )
