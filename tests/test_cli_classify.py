"""``gpm classify`` on a table of realistic processes, each named after the real program.

The table is the contract of the built-in rules: every case goes through
the command as JSON Lines (one run for all of them) and must come back with
the expected category and label.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_gpm
from tests.steamtree import install, new_libraryfolders

GiB = 1024**3
BLOB = "sha256-6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa"
TORCH = ["/home/me/venv/lib/python3.11/site-packages/torch/lib/libtorch_cuda.so",
         "/home/me/venv/lib/python3.11/site-packages/torch/lib/libc10_cuda.so",
         "/home/me/venv/lib/python3.11/site-packages/nvidia/cudnn/lib/libcudnn.so.9"]
STEAM = "/home/me/.local/share/Steam"
PROTON = f"{STEAM}/steamapps/common/Proton 9.0 (Beta)/files/bin/wine64-preloader"
REAPER = {"name": "reaper", "exe": f"{STEAM}/ubuntu12_32/reaper",
          "cmdline": [f"{STEAM}/ubuntu12_32/reaper", "SteamLaunch", "AppId=892970", "--",
                      f"{STEAM}/ubuntu12_32/steam-launch-wrapper", "--", "/mnt/fast/valheim/valheim.x86_64"]}
STEAM_CLIENT = {"name": "steam", "exe": f"{STEAM}/ubuntu12_32/steam", "cmdline": [f"{STEAM}/ubuntu12_32/steam"]}

# (case, input, category, label)
CASES = [
    ("ollama_serve", {"name": "ollama", "exe": "/usr/local/bin/ollama", "cmdline": ["/usr/local/bin/ollama", "serve"],
                      "libraries": ["/usr/local/lib/ollama/cuda_v12/libggml-cuda.so"]},
     "llm_inference", "ollama"),
    ("ollama_runner", {"name": "ollama", "exe": "/usr/local/bin/ollama",
                       "cmdline": ["/usr/local/bin/ollama", "runner", "--model",
                                   f"/usr/share/ollama/.ollama/models/blobs/{BLOB}", "--ctx-size", "8192",
                                   "--batch-size", "512", "--n-gpu-layers", "33", "--port", "39185"]},
     "llm_inference", "sha256-6a0746a1ec1a"),
    ("ollama_llama_server_legacy", {"name": "ollama_llama_se",
                                    "exe": "/tmp/ollama1234/runners/cuda_v12/ollama_llama_server",
                                    "cmdline": ["/tmp/ollama1234/runners/cuda_v12/ollama_llama_server", "--model",
                                                f"/home/me/.ollama/models/blobs/{BLOB}", "--ctx-size", "2048"]},
     "llm_inference", "sha256-6a0746a1ec1a"),
    ("llama_cpp_server", {"name": "llama-server", "exe": "/opt/llama.cpp/build/bin/llama-server",
                          "cmdline": ["llama-server", "-m", "/models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
                                      "-ngl", "99", "--port", "8080", "--api-key", "sk-local-secret-key-123456"]},
     "llm_inference", "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"),
    ("llama_cpp_cli_hf", {"name": "llama-cli", "cmdline": ["llama-cli", "-hf", "bartowski/Qwen2.5-7B-Instruct-GGUF",
                                                           "-p", "Why is the sky blue?"]},
     "llm_inference", "bartowski/Qwen2.5-7B-Instruct-GGUF"),
    ("llamafile", {"name": "mistral-7b-inst", "exe": "/home/me/bin/mistral-7b-instruct-v0.2.Q4_0.llamafile",
                   "cmdline": ["./mistral-7b-instruct-v0.2.Q4_0.llamafile", "-ngl", "999"]},
     "llm_inference", "llamafile"),
    ("vllm_serve", {"name": "vllm", "exe": "/usr/bin/python3.11",
                    "cmdline": ["/opt/venv/bin/python3", "/opt/venv/bin/vllm", "serve",
                                "meta-llama/Llama-3.1-8B-Instruct", "--gpu-memory-utilization", "0.9"],
                    "libraries": TORCH + ["/opt/venv/lib/python3.11/site-packages/vllm/_C.abi3.so"]},
     "llm_inference", "meta-llama/Llama-3.1-8B-Instruct"),
    ("vllm_openai_api_server", {"name": "python", "exe": "/usr/bin/python3.10",
                                "cmdline": ["python", "-m", "vllm.entrypoints.openai.api_server", "--model",
                                            "mistralai/Mistral-7B-Instruct-v0.3", "--tensor-parallel-size", "2"]},
     "llm_inference", "mistralai/Mistral-7B-Instruct-v0.3"),
    ("tgi_launcher", {"name": "text-generation", "exe": "/usr/local/bin/text-generation-launcher",
                      "cmdline": ["text-generation-launcher", "--model-id", "HuggingFaceH4/zephyr-7b-beta",
                                  "--port", "80"]},
     "llm_inference", "HuggingFaceH4/zephyr-7b-beta"),
    ("tgi_server_shard", {"name": "text-generation", "exe": "/opt/conda/bin/python3.11",
                          "cmdline": ["/opt/conda/bin/python3.11", "/opt/conda/bin/text-generation-server", "serve",
                                      "HuggingFaceH4/zephyr-7b-beta", "--uds-path", "/tmp/text-generation-server"],
                          "libraries": TORCH},
     "llm_inference", "HuggingFaceH4/zephyr-7b-beta"),
    ("sglang_launch_server", {"name": "python3", "cmdline": ["python3", "-m", "sglang.launch_server", "--model-path",
                                                             "Qwen/Qwen2.5-7B-Instruct", "--port", "30000"],
                              "libraries": TORCH},
     "llm_inference", "Qwen/Qwen2.5-7B-Instruct"),
    ("lm_studio", {"name": "lm-studio", "exe": "/tmp/.mount_LM-StuAbC123/lm-studio",
                   "cmdline": ["/tmp/.mount_LM-StuAbC123/lm-studio", "--type=utility",
                               "--utility-sub-type=node.mojom.NodeService"],
                   "libraries": ["/home/me/.lmstudio/extensions/backends/llama.cpp-linux-x86_64-nvidia-cuda-avx2-1.21.0/"
                                 "libllama.so"]},
     "llm_inference", "LM Studio"),
    ("koboldcpp", {"name": "koboldcpp-linux", "exe": "/home/me/koboldcpp-linux-x64-cuda1210",
                   "cmdline": ["/home/me/koboldcpp-linux-x64-cuda1210", "--model",
                               "/models/mistral-7b-instruct-v0.2.Q5_K_M.gguf", "--usecublas", "--gpulayers", "33"]},
     "llm_inference", "mistral-7b-instruct-v0.2.Q5_K_M.gguf"),
    ("tabbyapi_exllamav2", {"name": "python3", "cmdline": ["python3", "main.py"], "cwd": "/home/me/tabbyAPI",
                            "libraries": TORCH + ["/home/me/tabbyAPI/venv/lib/python3.11/site-packages/"
                                                  "exllamav2_ext.cpython-311-x86_64-linux-gnu.so"]},
     "llm_inference", "TabbyAPI"),
    ("text_generation_webui", {"name": "python", "cmdline": ["python", "server.py", "--model",
                                                             "TheBloke_Llama-2-13B-chat-GPTQ", "--listen"],
                               "cwd": "/home/me/text-generation-webui", "libraries": TORCH},
     "llm_inference", "TheBloke_Llama-2-13B-chat-GPTQ"),
    ("llama_cpp_python_server", {"name": "python3", "cmdline": ["python3", "-m", "llama_cpp.server", "--model",
                                                                "/models/Phi-3-mini-4k-instruct-q4.gguf"]},
     "llm_inference", "Phi-3-mini-4k-instruct-q4.gguf"),
    ("transformers_generate_script", {"name": "python3", "cmdline": ["python3", "generate.py", "--prompt", "Hello"],
                                      "libraries": TORCH},
     "llm_inference", "generate.py"),
    ("uvicorn_fastapi_model_server", {"name": "uvicorn", "exe": "/usr/bin/python3.11",
                                      "cmdline": ["/home/me/venv/bin/python3", "/home/me/venv/bin/uvicorn",
                                                  "app.main:app", "--port", "8000"], "libraries": TORCH},
     "llm_inference", "uvicorn"),
    ("gradio_app", {"name": "python", "cmdline": ["python", "app.py"], "libraries": TORCH},
     "llm_inference", "app.py"),
    ("comfyui", {"name": "python", "cmdline": ["python", "main.py", "--listen", "0.0.0.0"],
                 "cwd": "/home/me/ComfyUI", "libraries": TORCH},
     "llm_inference", "ComfyUI"),
    ("torchrun_worker", {"name": "python3", "cmdline": ["/usr/bin/python3", "-u", "pretrain_gpt.py",
                                                        "--micro-batch-size", "4"],
                         "environ": {"LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "none", "HOME": "/home/me"},
                         "parents": [{"name": "torchrun", "cmdline": ["/usr/bin/python3", "/usr/local/bin/torchrun",
                                                                      "--nproc_per_node=8", "pretrain_gpt.py"]}],
                         "libraries": TORCH},
     "ml_training", "pretrain_gpt.py"),
    ("accelerate_launch_lora", {"name": "python3", "cmdline": ["/usr/bin/python3", "sft_lora.py", "--bf16"],
                                "parents": [{"name": "accelerate", "cmdline": ["/usr/bin/python3", "/usr/bin/accelerate",
                                                                               "launch", "sft_lora.py"]}],
                                "libraries": TORCH},
     "ml_training", "sft_lora.py"),
    ("deepspeed_launcher", {"name": "python3", "cmdline": ["/usr/bin/python3", "-u", "main.py", "--local_rank=0",
                                                           "--deepspeed_config", "ds_config.json"],
                            "parents": [{"name": "python3", "cmdline": ["/usr/bin/python3", "-u", "-m",
                                                                        "deepspeed.launcher.launch",
                                                                        "--world_info=eyJsb2NhbGhvc3QiOiBbMF19"]}],
                            "libraries": TORCH},
     "ml_training", "main.py"),
    ("lightning_cli_fit", {"name": "python", "cmdline": ["python", "main.py", "fit", "--config", "config.yaml"],
                           "libraries": TORCH},
     "ml_training", "main.py"),
    ("hf_run_clm_do_train", {"name": "python", "cmdline": ["python", "run_clm.py", "--model_name_or_path", "gpt2",
                                                           "--do_train", "--output_dir", "/tmp/out"],
                             "libraries": TORCH},
     "ml_training", "run_clm.py"),
    ("keras_tensorflow_training", {"name": "python3", "cmdline": ["python3", "train_resnet.py"],
                                   "libraries": ["/usr/lib/python3/dist-packages/tensorflow/"
                                                 "libtensorflow_framework.so.2"]},
     "ml_training", "train_resnet.py"),
    ("jax_t5x_train", {"name": "python3", "cmdline": ["python3", "-m", "t5x.train", "--gin_file=base.gin"],
                       "libraries": ["/home/me/venv/lib/python3.11/site-packages/jaxlib/xla_extension.so"]},
     "ml_training", "t5x.train"),
    ("axolotl", {"name": "python", "cmdline": ["python", "-m", "axolotl.cli.train", "examples/llama-3/lora.yml"],
                 "libraries": TORCH},
     "ml_training", "axolotl.cli.train"),
    ("nanogpt_epochs", {"name": "python", "cmdline": ["python", "model.py", "--epochs", "10"], "libraries": TORCH},
     "ml_training", "model.py"),
    ("jupyter_kernel_long_lived", {"name": "python3", "cmdline": ["python3", "-m", "ipykernel_launcher", "-f",
                                                                  "/run/user/1000/jupyter/kernel-1.json"],
                                   "libraries": TORCH, "age_seconds": 7200, "used_memory_bytes": 10 * GiB},
     "ml_training", "ipykernel_launcher"),
    ("jupyter_kernel_short", {"name": "python3", "cmdline": ["python3", "-m", "ipykernel_launcher", "-f",
                                                             "/run/user/1000/jupyter/kernel-2.json"],
                              "libraries": TORCH, "age_seconds": 60, "used_memory_bytes": 500 * 2**20},
     "general_compute", "ipykernel_launcher"),
    ("proton_cyberpunk", {"name": "Cyberpunk2077.e", "exe": PROTON,
                          "cmdline": ["Z:\\home\\me\\.local\\share\\Steam\\steamapps\\common\\Cyberpunk 2077\\bin\\x64\\"
                                      "Cyberpunk2077.exe"],
                          "environ": {"SteamAppId": "1091500",
                                      "STEAM_COMPAT_DATA_PATH": f"{STEAM}/steamapps/compatdata/1091500"}},
     "gaming", "Cyberpunk 2077"),
    ("steam_native_valheim_reaper", {"name": "valheim.x86_64", "exe": "/mnt/fast/valheim/valheim.x86_64",
                                     "cmdline": ["/mnt/fast/valheim/valheim.x86_64"], "parents": [REAPER]},
     "gaming", "Valheim"),
    ("steam_native_counter_strike", {"name": "cs2", "exe": f"{STEAM}/steamapps/common/Counter-Strike Global Offensive"
                                                          "/game/bin/linuxsteamrt64/cs2",
                                     "cmdline": ["cs2", "-steam"]},
     "gaming", "Counter-Strike 2"),
    ("steam_unknown_appid", {"name": "hades", "cmdline": ["./Hades"], "environ": {"SteamAppId": "1145360"}},
     "gaming", "Steam app 1145360"),
    ("lutris_wine_witcher3", {"name": "witcher3.exe",
                              "exe": "/home/me/.local/share/lutris/runners/wine/wine-ge-8-26-x86_64/bin/wine64-preloader",
                              "cmdline": ["C:\\GOG Games\\The Witcher 3\\bin\\x64_dx12\\witcher3.exe"],
                              "environ": {"WINEPREFIX": "/home/me/Games/the-witcher-3"}},
     "gaming", "witcher3"),
    ("heroic_unreal_shipping", {"name": "Palworld-Win64-",
                                "cmdline": ["Z:\\home\\me\\Games\\Heroic\\Palworld\\Pal\\Binaries\\Win64\\"
                                            "Palworld-Win64-Shipping.exe"]},
     "gaming", "Palworld"),
    ("ffxiv_dx11_xivlauncher", {"name": "ffxiv_dx11.exe", "cmdline": ["C:\\Program Files (x86)\\SquareEnix\\"
                                                                       "FINAL FANTASY XIV - A Realm Reborn\\game\\ffxiv_dx11.exe"]},
     "gaming", "ffxiv"),
    ("itch_unity_game", {"name": "Game.x86_64", "exe": "/home/me/opt/some-game/Game.x86_64",
                         "cmdline": ["/home/me/opt/some-game/Game.x86_64"],
                         "libraries": ["/home/me/opt/some-game/UnityPlayer.so", "/usr/lib/libvulkan.so.1"]},
     "gaming", "Game.x86_64"),
    ("supertuxkart_usr_games", {"name": "supertuxkart", "exe": "/usr/games/supertuxkart",
                                "cmdline": ["/usr/games/supertuxkart"]},
     "gaming", "supertuxkart"),
    ("busy_linux_game_heuristic", {"name": "Gunfire.x86_64", "exe": "/home/me/Downloads/gunfire/Gunfire.x86_64",
                                   "cmdline": ["./Gunfire.x86_64"], "gpu_utilization_percent": 92, "libraries": []},
     "gaming", "Gunfire.x86_64"),
    ("non_steam_shortcut", {"name": "yuzu", "exe": "/home/me/Applications/yuzu.AppImage",
                            "cmdline": ["/home/me/Applications/yuzu.AppImage"],
                            "environ": {"SteamGameId": "12345678901234567890"}},
     "gaming", "yuzu.AppImage"),
    ("gnome_shell", {"name": "gnome-shell", "exe": "/usr/bin/gnome-shell", "cmdline": ["/usr/bin/gnome-shell"]},
     "desktop", "GNOME Shell"),
    ("xorg", {"name": "Xorg", "exe": "/usr/lib/xorg/Xorg", "cmdline": ["/usr/lib/xorg/Xorg", "vt2", "-displayfd", "3",
                                                                          "-auth", "/run/user/1000/gdm/Xauthority"]},
     "desktop", "Xorg"),
    ("kwin_wayland", {"name": "kwin_wayland", "exe": "/usr/bin/kwin_wayland",
                      "cmdline": ["/usr/bin/kwin_wayland", "--wayland-fd", "7", "--socket", "wayland-0"]},
     "desktop", "KWin"),
    ("hyprland", {"name": "Hyprland", "exe": "/usr/bin/Hyprland", "cmdline": ["Hyprland"]}, "desktop", "Hyprland"),
    ("chrome_gpu_process", {"name": "chrome", "exe": "/opt/google/chrome/chrome",
                            "cmdline": ["/opt/google/chrome/chrome --type=gpu-process --crashpad-handler-pid=4242 "
                                        "--enable-crash-reporter=,stable --gpu-preferences=UAAAAAAAAAAgAAAEAAAAAAAAAA"]},
     "desktop", "Chrome"),
    ("firefox_gpu_process", {"name": "GPU Process", "exe": "/usr/lib/firefox/firefox",
                             "cmdline": ["/usr/lib/firefox/firefox", "-contentproc", "-parentBuildID",
                                         "20240101000000", "-prefsHandle", "0:44000", "gpu"]},
     "desktop", "Firefox"),
    ("vscode_electron_gpu", {"name": "code", "exe": "/usr/share/code/code",
                             "cmdline": ["/usr/share/code/code --type=gpu-process --enable-crash-reporter=abc"]},
     "desktop", "code"),
    ("steamwebhelper", {"name": "steamwebhelper", "exe": f"{STEAM}/ubuntu12_64/steamwebhelper",
                        "cmdline": [f"{STEAM}/ubuntu12_64/steamwebhelper", "-lang=en_US", "--type=gpu-process"],
                        "parents": [STEAM_CLIENT]},
     "desktop", "Steam client"),
    ("mpv_hwdec", {"name": "mpv", "exe": "/usr/bin/mpv", "cmdline": ["mpv", "--hwdec=nvdec", "film.mkv"]},
     "desktop", "mpv"),
    ("wine_explorer", {"name": "explorer.exe", "exe": PROTON, "cmdline": ["C:\\windows\\explorer.exe", "/desktop"],
                       "environ": {"WINEPREFIX": "/home/me/.wine"}},
     "desktop", "Wine desktop"),
    ("ffmpeg_nvenc", {"name": "ffmpeg", "exe": "/usr/bin/ffmpeg",
                      "cmdline": ["ffmpeg", "-hwaccel", "cuda", "-i", "in.mkv", "-c:v", "h264_nvenc", "out.mp4"]},
     "general_compute", "ffmpeg"),
    ("blender_cycles", {"name": "blender", "exe": "/opt/blender-4.1/blender",
                        "cmdline": ["blender", "-b", "scene.blend", "-E", "CYCLES", "-a"]},
     "general_compute", "blender"),
    ("cuda_sample_nbody", {"name": "nbody", "exe": "/home/me/cuda-samples/bin/x86_64/linux/release/nbody",
                           "cmdline": ["./nbody", "-benchmark", "-numbodies=256000"]},
     "general_compute", "nbody"),
    ("t_rex_miner", {"name": "t-rex", "exe": "/opt/t-rex/t-rex",
                     "cmdline": ["./t-rex", "-a", "kawpow", "-o", "stratum+tcp://wallet.worker:x@rvn.pool:3333"]},
     "general_compute", "t-rex"),
    ("hashcat", {"name": "hashcat", "exe": "/usr/bin/hashcat", "cmdline": ["hashcat", "-m", "0", "hashes.txt"]},
     "general_compute", "hashcat"),
    ("obs_studio_nvenc", {"name": "obs", "exe": "/usr/bin/obs", "cmdline": ["obs", "--startrecording"]},
     "general_compute", "obs"),
    ("onnxruntime_batch_job", {"name": "python3", "cmdline": ["python3", "embed_corpus.py"],
                               "libraries": ["/home/me/venv/lib/python3.11/site-packages/onnxruntime/capi/"
                                             "libonnxruntime_providers_cuda.so"]},
     "general_compute", "embed_corpus.py"),
    ("unknown_solver", {"name": "solver", "exe": "/opt/cfd/bin/solver", "cmdline": ["/opt/cfd/bin/solver", "case1"]},
     "general_compute", "solver"),
    ("darknet_detector_train", {"name": "darknet", "exe": "/home/me/darknet/darknet",
                                "cmdline": ["./darknet", "detector", "train", "data/obj.data", "yolo.cfg"],
                                "libraries": ["/usr/lib/x86_64-linux-gnu/libcudnn.so.8"]},
     "ml_training", "darknet"),
    ("name_only_vanished_llama_server", {"pid": 31337, "name": "llama-server"}, "llm_inference", "llama.cpp"),
]


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    """Every case through one `gpm classify` run, with a Steam library that knows two games."""
    home = tmp_path_factory.mktemp("home")
    steam = home / ".local/share/Steam"
    install(steam, "1091500", "Cyberpunk 2077", "Cyberpunk 2077")
    install(steam, "730", "Counter-Strike 2", "Counter-Strike Global Offensive")
    library = home / "fast"
    install(library, "892970", "Valheim", "Valheim")
    (steam / "steamapps/libraryfolders.vdf").write_text(new_libraryfolders([steam, library]))
    lines = "".join(json.dumps(case[1]) + "\n" for case in CASES)
    result = run_gpm("classify", "--input", "-", input=lines,
                     env={"HOME": home, "XDG_CONFIG_HOME": home / ".config"})
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == len(CASES)
    return {case[0]: obj for case, obj in zip(CASES, out)}


def test_table_is_large_and_names_are_unique():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
    assert {c[2] for c in CASES} == {"gaming", "llm_inference", "ml_training", "desktop", "general_compute"}


@pytest.mark.parametrize("case,given,category,label", CASES, ids=[c[0] for c in CASES])
def test_case(classified, case, given, category, label):
    got = classified[case]
    assert (got["category"], got["label"]) == (category, label), got["reason"]
    assert got["reason"]
    # the same object comes back, with three keys added
    assert {k: v for k, v in got.items() if k not in ("category", "label", "reason")} == given


def test_ollama_runner_blob_is_named_from_its_manifest(gpm, tmp_path):
    models = tmp_path / "ollama/models"
    digest = BLOB.removeprefix("sha256-")
    manifest = {"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 4920734016},
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "1" * 64, "size": 1481}]}
    for rel in ("registry.ollama.ai/library/llama3.1/8b", "registry.ollama.ai/library/llama3.1/latest",
                "hf.co/bartowski/Llama-3.1-8B-GGUF/Q4_K_M"):
        (models / "manifests" / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / "manifests" / rel).write_text(json.dumps(manifest))
    runner = {"name": "ollama", "cmdline": ["/usr/local/bin/ollama", "runner", "--model", f"{models}/blobs/{BLOB}"]}
    other = {"name": "ollama", "cmdline": ["ollama", "runner", "--model", f"{models}/blobs/sha256-{'f' * 64}"]}
    result = gpm("classify", input=json.dumps(runner) + "\n" + json.dumps(other) + "\n")
    first, second = map(json.loads, result.stdout.splitlines())
    assert (first["category"], first["label"]) == ("llm_inference", "llama3.1:8b")
    assert second["label"] == "sha256-ffffffffffff"


def test_on_a_terminal_it_says_what_it_reads_instead_of_waiting_silently(tmp_path):
    """#13.10: `gpm classify` typed at a terminal, in a real pty: one line on
    stderr says what it expects; a line typed and Ctrl-D classify as usual."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    from tests.conftest import gpm_env

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gpm", "classify"], stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=gpm_env())
    os.close(slave)
    try:
        hint = b""
        deadline = time.monotonic() + 15
        while not hint.endswith(b"\n") and time.monotonic() < deadline:
            if select.select([proc.stderr], [], [], 0.5)[0]:
                hint += os.read(proc.stderr.fileno(), 4096)
        assert hint == b"gpm classify: reading JSON Lines from stdin (Ctrl-D to end); see gpm classify --help\n"
        os.write(master, json.dumps({"name": "ollama", "exe": "/usr/local/bin/ollama",
                                     "cmdline": ["/usr/local/bin/ollama", "serve"]}).encode() + b"\n")
        os.write(master, b"\x04")  # Ctrl-D at the start of a line: end of input
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert (proc.returncode, err) == (0, b"")
    assert [(o["name"], o["category"], o["label"]) for o in map(json.loads, out.splitlines())] == [
        ("ollama", "llm_inference", "ollama")]

    piped = run_gpm("classify", input='{"name": "ollama", "exe": "/usr/local/bin/ollama"}\n')
    assert piped.returncode == 0 and piped.stderr == ""  # not a terminal: nothing to say
