"""The cross-machine check: the instruction-set settings of benchmarks/cross_build.py are the Makefile's, glued
values are read back from executed notebooks, and a verdict that flips between builds is marked as not robust."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import nbformat
import pytest

from xaiutils.analysis import verdicts

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cross_build():
    spec = importlib.util.spec_from_file_location("cross_build", ROOT / "benchmarks" / "cross_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_makefile_forces_the_same_instruction_sets(cross_build):
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    for isa in ("avx2", "generic"):
        line = re.search(rf"^ISA_ENV_{isa} := (.*)$", makefile, re.MULTILINE).group(1)
        assert dict(item.split("=", 1) for item in line.split()) == cross_build.ISA_ENVIRONMENTS[isa]


def test_unknown_isa_names_the_valid_ones(cross_build):
    with pytest.raises(SystemExit, match="unknown --isa 'avx512'; valid: native, avx2, generic"):
        cross_build.isa_environment("avx512")


def glue_output(name, text):
    """As MyST-NB's glue(display=False) stores a value (seen in an executed notebook 5)."""
    prefix = "application/papermill.record/"
    return nbformat.v4.new_output("display_data", data={f"{prefix}text/plain": text},
                                  metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})


def test_glued_values_are_read_back_from_an_executed_notebook(tmp_path, cross_build):
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("glue(...)")
    cell.outputs = [glue_output("accuracy_effect", "0.125"), glue_output("claim2_verdict", "not supported"),
                    glue_output("n_rows", "147"), nbformat.v4.new_output("stream", text="not glued\n")]
    notebook.cells.append(cell)
    path = tmp_path / "05_regression.ipynb"
    nbformat.write(notebook, path)
    assert cross_build.glued_values(path) == {"accuracy_effect": 0.125, "claim2_verdict": "not supported",
                                              "n_rows": 147}


RECORD = {"preset": "book", "settings": verdicts.preset_settings("book"),
          "verdicts": {"claim2_k_verdict": {"native": "supported", "avx2": "not supported"},
                       "claim1_verdict": {"native": "supported", "avx2": "supported"},
                       "n_methods_beating_baselines": {"native": 1, "avx2": 1}}}


def test_a_verdict_that_flips_between_builds_is_not_robust():
    text = verdicts.robustness("claim2_k_verdict", "supported", RECORD, "book")
    assert text == "NOT ROBUST across CPUs (native: supported; avx2: not supported)"


def test_a_verdict_both_builds_and_this_one_share_is_robust():
    assert verdicts.robustness("claim1_verdict", "supported", RECORD, "book") == (
        "robust across CPUs (the same in the native and avx2 builds)")
    assert verdicts.robustness("n_methods_beating_baselines", 1, RECORD, "book").startswith("robust across CPUs")


def test_a_verdict_this_build_finds_otherwise_than_both_recorded_builds_is_not_robust():
    assert verdicts.robustness("claim1_verdict", "not supported", RECORD, "book").startswith("NOT ROBUST")


def test_robustness_is_not_claimed_where_it_was_not_measured():
    for name, preset, record in [("claim3_k_verdict", "book", RECORD), ("claim1_verdict", "smoke", RECORD),
                                 ("claim1_verdict", "book", None)]:
        assert verdicts.robustness(name, "supported", record, preset) == (
            "robustness across CPUs not measured for this setting")


def test_the_record_is_read_or_refused_with_a_reason(tmp_path):
    assert verdicts.read_cross_build_record(tmp_path / "missing.json") is None
    path = tmp_path / "cross_build.json"
    path.write_text(json.dumps(RECORD))
    assert verdicts.read_cross_build_record(path) == RECORD
    path.write_text(json.dumps({"preset": "book"}))
    with pytest.raises(ValueError, match="no 'verdicts' table"):
        verdicts.read_cross_build_record(path)


def test_a_record_of_other_preset_values_vouches_for_nothing():
    """The record of a build with another method list (or none at all: records before the settings were kept)
    would otherwise call a verdict that the change of settings moved 'not robust across CPUs'."""
    assert verdicts.preset_settings("book") == verdicts.preset_settings("book")
    assert verdicts.preset_settings("book") != verdicts.preset_settings("smoke")
    for settings in ("0123456789abcdef", None):
        record = {**RECORD, "settings": settings}
        text = verdicts.robustness("claim1_verdict", "supported", record, "book")
        assert text.startswith("robustness across CPUs not measured for this setting (the record is of other preset")
