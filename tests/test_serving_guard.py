"""What MLflow's scoring server parses before mmpc's model sees a request (the guard the served model
installs), and the serving settings read when the model loads. In process and fast; the same cases
over real HTTP are rows of tests/test_serving_robustness.py."""

from __future__ import annotations

import json
import sys

import pytest
from mlflow.exceptions import MlflowException

from mmpc import serving_guard, serving_input


@pytest.fixture
def server(monkeypatch):
    """The scoring server module as ``mlflow models serve`` has it, guarded; restored afterwards."""
    from mlflow.pyfunc import scoring_server

    for name in ("invocations", "infer_and_parse_data"):
        monkeypatch.setattr(scoring_server, name, getattr(scoring_server, name))
    assert serving_guard.install()
    guarded = scoring_server.invocations
    assert serving_guard.install() and scoring_server.invocations is guarded  # a second load: as is
    return scoring_server


def test_no_content_type_is_415_naming_the_header(server):
    answer = server.invocations(b"{}", None, model=None, input_schema=None)
    assert answer.status == 415
    assert "Content-Type: application/json" in json.loads(answer.response)["message"]


class _Model:
    """What the scoring server reads of a model before parsing the body."""

    class metadata:  # the attribute MLflow reads
        @staticmethod
        def _is_signature_from_type_hint() -> bool:
            return False


def test_json_nested_too_deep_is_a_400_not_a_recursion_error(server):
    body = b'{"dataframe_records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(MlflowException, match="nested deeper than") as raised:
        server.invocations(body, "application/json", model=_Model(), input_schema=None)
    assert raised.value.get_http_status_code() == 400


def test_a_split_index_longer_than_its_data_is_refused(server):
    split = {"dataframe_split": {"columns": ["designation"], "index": [0, 1, 2], "data": [["Lampe"]]}}
    with pytest.raises(MlflowException, match="'index' has 3 entries but 'data' has 1 row"):
        server.infer_and_parse_data(split)
    split["dataframe_split"]["index"] = [7]
    assert server.infer_and_parse_data(split).index.tolist() == [7]


def test_outside_the_scoring_server_nothing_is_installed(monkeypatch):
    monkeypatch.delitem(sys.modules, serving_guard.SCORING_SERVER, raising=False)
    assert not serving_guard.install()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MMPC_MAX_ROWS", "2k", "MMPC_MAX_ROWS='2k' is not a number"),
        ("MMPC_MAX_ROWS", "0", "MMPC_MAX_ROWS='0': the serving limit max_rows takes a whole number above 0"),
        ("MMPC_MAX_REQUEST_MB", "-5", "MMPC_MAX_REQUEST_MB='-5'"),
        ("MMPC_MAX_IMAGE_MB", "nan", "MMPC_MAX_IMAGE_MB='nan'"),
    ],
)
def test_a_bad_limit_names_the_variable_and_the_value(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(serving_input.SettingError, match=message.replace("(", r"\(")):
        serving_input.Limits.from_env()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [("MMPC_TORCH_THREADS", "two", "MMPC_TORCH_THREADS"), ("MMPC_DEVICE", "gpu", "MMPC_DEVICE")],
)
def test_a_bad_model_setting_refuses_to_load(monkeypatch, variable, value, message):
    from mmpc import serving

    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(serving.serving_guard, "install", lambda: False)  # this process serves nothing
    with pytest.raises(serving_input.SettingError, match=f"{message}.*'{value}'"):
        serving._load_settings(None)
        serving._device(None)
