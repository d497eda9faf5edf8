"""User rules from the config, checked before the built-in ones; broken rules are config errors."""

from __future__ import annotations

import json
import os

import pytest

from gpm.classify.process_facts import ProcessFacts, read_facts
from gpm.classify.rules import Context, classify
from gpm.classify.user_rules import validate_rules
from gpm.config import load_config
from gpm.errors import ConfigError

RULES = """
[[classify.rules]]
cmdline = "my_trainer\\\\.py"
category = "ml_training"
label = "nightly trainer"

[[classify.rules]]
name = "^blender$"
category = "desktop"

[[classify.rules]]
appid = 763890
category = "general_compute"
label = "not really a game"

[[classify.rules]]
library = "libmyengine\\\\.so"
exe = "^/opt/sim/"
category = "gaming"
label = "Flight Sim"
"""


def classify_lines(gpm, tmp_path, objects, config_text=RULES):
    config = tmp_path / "config.toml"
    config.write_text(config_text)
    result = gpm("--config", config, "classify", "--explain",
                 input="".join(json.dumps(o) + "\n" for o in objects))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_user_rules_win_over_built_ins(gpm, tmp_path):
    out = classify_lines(gpm, tmp_path, [
        {"name": "python3", "cmdline": ["python3", "my_trainer.py", "--serve"]},
        {"name": "blender", "exe": "/usr/bin/blender", "cmdline": ["blender"]},
        {"name": "java", "environ": {"SteamAppId": "763890"}},
        {"name": "sim", "exe": "/opt/sim/bin/sim", "libraries": ["/opt/sim/lib/libmyengine.so"]},
        {"name": "sim", "exe": "/home/me/sim", "libraries": ["/opt/sim/lib/libmyengine.so"]},
        {"name": "ffmpeg", "exe": "/usr/bin/ffmpeg"},
    ])
    got = [(o["category"], o["label"], o["rule"]) for o in out]
    assert got == [
        ("ml_training", "nightly trainer", "user rule #1"),
        ("desktop", "blender", "user rule #2"),
        ("general_compute", "not really a game", "user rule #3"),
        ("gaming", "Flight Sim", "user rule #4"),
        ("general_compute", "sim", "general"),
        ("general_compute", "ffmpeg", "general"),
    ]
    assert out[0]["reason"].startswith("matched user rule #1 (cmdline=")


@pytest.mark.parametrize("rules,message", [
    ('[[classify.rules]]\ncmdline = "train(("\ncategory = "ml_training"\n',
     "[[classify.rules]] #1: cmdline = 'train((' is not a valid regular expression"),
    ('[[classify.rules]]\nname = "a"\ncategory = "gaming"\n[[classify.rules]]\nnmae = "b"\ncategory = "gaming"\n',
     "[[classify.rules]] #2: unknown field 'nmae'"),
    ('[[classify.rules]]\nname = "a"\ncategory = "games"\n',
     "[[classify.rules]] #1: category = 'games': expected one of gaming, llm_inference"),
    ('[[classify.rules]]\ncategory = "gaming"\n', "[[classify.rules]] #1: needs at least one of exe, name"),
    ('[[classify.rules]]\nappid = "abc"\ncategory = "gaming"\n', "[[classify.rules]] #1: appid = 'abc'"),
])
def test_broken_rules_are_one_line_config_errors(gpm, tmp_path, rules, message):
    config = tmp_path / "config.toml"
    config.write_text(rules)
    result = gpm("--config", config, "config", "check")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert str(config) in result.stderr


def test_validated_rules_are_normalised_and_json_safe(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(RULES)
    rules = load_config(config)["classify.rules"]
    assert rules[2] == {"category": "general_compute", "appid": "763890", "label": "not really a game"}
    json.dumps(rules)
    with pytest.raises(ConfigError, match="#1: label must be a string"):
        validate_rules([{"name": "x", "category": "gaming", "label": 3}], "here")


def test_bad_input_lines_name_the_line(gpm):
    result = gpm("classify", input='{"name": "ok"}\n\nnot json\n')
    assert result.returncode == 1 and "stdin:3: not valid JSON" in result.stderr
    result = gpm("classify", input='{"cmdline": "python train.py"}\n')
    assert result.returncode == 1 and "stdin:1: 'cmdline' must be a list of strings" in result.stderr


def test_unreadable_process_is_classified_on_what_is_known(tmp_path, monkeypatch):
    """A process of another user: stat and cmdline readable, exe, environ and maps not."""
    import psutil

    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    (proc / "4242/stat").write_text("4242 (python3) S 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0"
                                    + " 0" * 30 + "\n")
    (proc / "4242/cmdline").write_bytes(b"python3\0finetune.py\0--lr\0" + b"1e-4\0")
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(proc))
    facts = read_facts(4242)
    assert facts.start_time_ms == 1700000000_000 + 500 * 1000 // os.sysconf("SC_CLK_TCK")
    assert facts.unreadable == ["user", "exe", "environ", "maps"]
    d = classify(facts, Context())
    assert (d.category, d.label) == ("ml_training", "finetune.py")
    assert "libraries unknown" in d.reason and "could not read its exe, environ, maps" in d.reason
    gone = classify(read_facts(999), Context())
    assert gone.category == "general_compute" and "exited" in gone.reason


def test_sample_path_does_not_import_psutil(gpm):
    code = ("import sys, gpm.sampling, gpm.classify.live, gpm.store.process_events; "
            "gpm.sampling.default_enrichers(); gpm.sampling.default_savers(); "
            "print('psutil' in sys.modules, 'sqlite_utils' in sys.modules)")
    import subprocess
    import sys

    from tests.conftest import gpm_env

    out = subprocess.run([sys.executable, "-c", code], env=gpm_env(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_facts_from_json_ignores_unneeded_environment():
    facts = ProcessFacts.from_json({"environ": {"SteamAppId": "1", "AWS_SECRET_ACCESS_KEY": "x"}})
    assert facts.environ == {"SteamAppId": "1"}


NAMES = {  # name -> is it a Python interpreter?
    "python": True, "python3": True, "python3.12": True, "Python3.12.EXE": True, "python.exe": True,
    "pythonw": True, "pythonw.exe": True, "pypy3": True, "PyPy3.10": True, "python3.": True, "python\n": True,
    "python3.exe.exe": False, "python3x": False, "pythonw3": False, "ipython": False, "pypy-c": False,
    "py": False, "": False, "python3\n\n": False, "jupyter-python": False,
}
TRAINING_ARGS = {"--epochs", "-epochs", "--epochs=3", "--lr", "-lr=1e-4", "--lr\n", "--nproc_per_node=8"}
SERVING_ARGS = {"--port", "--port=8080", "--server-name", "--server_port=1", "--host\n", "--listen=0.0.0.0"}
OTHER_ARGS = {"---epochs", "--epochs3", "--lr\n=1", "--num-train-epochs", "-port", "--hostname", "--", "-", "",
              "epochs"}
LIBS = ["libtorch_cuda.so", "libtorch.so.2", "libtorch_python.so", "libc10.so", "libc10_cuda.so", "libc10x.so",
        "_jax.cpython-312.so", "jaxlib", "ggml-cuda.so", "libllama.so", "libcudnn.so.9", "libnvinfer.so.10",
        "exllamav2_ext.so", "onnxruntime_pybind11_state.so", "libtensorflow_cc.so.2", "libc.so.6", "libfoo.so"]


def test_python_names_and_option_words():
    from gpm.classify.cmdline import is_python
    from gpm.classify.known_programs import SERVE_OPTION, TRAIN_OPTION

    assert {name for name in NAMES if is_python(name)} == {name for name, want in NAMES.items() if want}
    args = TRAINING_ARGS | SERVING_ARGS | OTHER_ARGS
    assert {a for a in args if TRAIN_OPTION.match(a)} == TRAINING_ARGS
    assert {a for a in args if SERVE_OPTION.match(a)} == SERVING_ARGS


def test_framework_prefixes_answer_as_the_regexes_they_replaced():
    import re

    from gpm.classify.known_programs import framework_of

    frameworks = [
        (r"^lib(torch_cuda|torch_cpu|torch|c10_cuda|c10)\.so", "PyTorch"),
        (r"^(libtensorflow_framework|libtensorflow_cc|_pywrap_tensorflow)", "TensorFlow"),
        (r"^(xla_extension|libxla|jaxlib|_jax\.)", "JAX"), (r"^(libggml|libllama|ggml)", "ggml"),
        (r"^(libonnxruntime|onnxruntime_pybind11)", "ONNX Runtime"), (r"^libnvinfer", "TensorRT"),
        (r"^(libpaddle|libmxnet)", "Paddle/MXNet"), (r"^libctranslate2", "CTranslate2"),
        (r"^(exllamav2_ext|exllamav3)", "exllama"), (r"^libcudnn", "cuDNN"),
    ]
    for lib in LIBS:
        want = next((fw for pattern, fw in frameworks if re.match(pattern, lib)), None)
        assert framework_of(lib) == want, lib
