"""What the classifier knows by name: ML libraries, training and serving words,
desktop programs, browsers, Wine's own processes, game folders and engines.

Tables only (and ``framework_of``); the rules that weigh them are in
gpm.classify.rules.
"""

from __future__ import annotations

import re

# Library file name prefixes -> framework; the first that matches wins.
FRAMEWORK_LIBS = (
    (("libtorch_cuda.so", "libtorch_cpu.so", "libtorch.so", "libc10_cuda.so", "libc10.so"), "PyTorch"),
    (("libtensorflow_framework", "libtensorflow_cc", "_pywrap_tensorflow"), "TensorFlow"),
    (("xla_extension", "libxla", "jaxlib", "_jax."), "JAX"),
    (("libggml", "libllama", "ggml"), "ggml"),
    (("libonnxruntime", "onnxruntime_pybind11"), "ONNX Runtime"),
    (("libnvinfer",), "TensorRT"),
    (("libpaddle", "libmxnet"), "Paddle/MXNet"),
    (("libctranslate2",), "CTranslate2"),
    (("exllamav2_ext", "exllamav3"), "exllama"),
    (("libcudnn",), "cuDNN"),
)
# One test rejects most libraries at once (maps can list hundreds).
_FRAMEWORK_PREFIXES = tuple(p for prefixes, _ in FRAMEWORK_LIBS for p in prefixes)


def framework_of(library: str) -> str | None:
    """The framework a library file name (``libtorch_cuda.so``) shows, if any."""
    if not library.startswith(_FRAMEWORK_PREFIXES):
        return None
    return next(name for prefixes, name in FRAMEWORK_LIBS if library.startswith(prefixes))


TRAINABLE = {"PyTorch", "TensorFlow", "JAX", "Paddle/MXNet"}
CUDNN_ONLY = {"cuDNN"}

TRAIN_WORDS = {
    "train", "training", "trainer", "finetune", "finetuning", "pretrain", "pretraining",
    "sft", "dpo", "grpo", "rlhf", "torchrun", "deepspeed", "lightning", "axolotl", "unsloth",
    "autotrain", "torchtune", "llamafactory", "composer", "horovodrun", "colossalai",
}
# --name or -name, alone or as --name=value
TRAIN_OPTION = re.compile(
    r"^--?(epochs|num_epochs|num-epochs|num_train_epochs|n_epochs|max_epochs|max-epochs|"
    r"learning_rate|learning-rate|lr|do_train|train_file|train-file|train_data|train-data|"
    r"gradient_accumulation_steps|gradient-accumulation-steps|nproc_per_node|nproc-per-node)(=|$)")
FINE_TUNE = re.compile(r"fine[-_ ]?tun(e|ing)", re.IGNORECASE)
SERVE_WORDS = {
    "serve", "server", "serving", "api", "app", "webui", "chat", "generate", "generation",
    "infer", "inference", "predict", "completion", "completions", "pipeline", "uvicorn",
    "gunicorn", "hypercorn", "gradio", "streamlit", "fastapi", "flask", "openai", "sample",
    "sampling", "demo", "bot",
}
# --name alone or as --name=value
SERVE_OPTION = re.compile(r"^--(port|host|listen|server[-_]port|server[-_]name)(=|$)")

DESKTOP = {
    "xorg": "Xorg", "x": "Xorg", "xwayland": "Xwayland", "gnome-shell": "GNOME Shell",
    "kwin_wayland": "KWin", "kwin_x11": "KWin", "kwin": "KWin", "kwin_wayland_wrapper": "KWin",
    "plasmashell": "KDE Plasma", "sway": "Sway", "hyprland": "Hyprland", "weston": "Weston",
    "mutter": "Mutter", "wayfire": "Wayfire", "river": "river", "labwc": "labwc", "niri": "niri",
    "cosmic-comp": "COSMIC", "gamescope": "gamescope", "gamescope-wl": "gamescope",
    "xfwm4": "Xfwm", "picom": "picom", "compton": "compton", "cinnamon": "Cinnamon",
    "muffin": "Cinnamon", "marco": "MATE", "budgie-wm": "Budgie", "gala": "Pantheon",
    "enlightenment": "Enlightenment", "xdg-desktop-portal-gnome": "xdg-desktop-portal",
    "xdg-desktop-portal-kde": "xdg-desktop-portal", "xdg-desktop-portal-hyprland": "xdg-desktop-portal",
    "gnome-remote-desktop-daemon": "GNOME Remote Desktop", "sddm-greeter": "SDDM",
    "sddm-greeter-qt6": "SDDM", "gdm-wayland-session": "GDM", "lightdm": "LightDM",
    "nvidia-settings": "nvidia-settings", "krunner": "KDE Plasma", "nautilus": "Files",
    "dolphin": "Dolphin", "kscreenlocker_greet": "KDE Plasma",
    "xdg-desktop-portal-gtk": "xdg-desktop-portal", "waybar": "Waybar",
}
BROWSERS = {
    "chrome": "Chrome", "google-chrome": "Chrome", "chromium": "Chromium",
    "chromium-browser": "Chromium", "brave": "Brave", "brave-browser": "Brave",
    "msedge": "Edge", "microsoft-edge": "Edge", "vivaldi": "Vivaldi", "vivaldi-bin": "Vivaldi",
    "opera": "Opera", "firefox": "Firefox", "firefox-bin": "Firefox", "firefox-esr": "Firefox",
    "librewolf": "LibreWolf", "zen": "Zen", "zen-bin": "Zen", "thunderbird": "Thunderbird",
    "epiphany": "Epiphany", "falkon": "Falkon", "gpu process": "Firefox",
    "web content": "Firefox", "isolated web co": "Firefox", "rdd process": "Firefox",
}
VIDEO_PLAYERS = {
    "mpv": "mpv", "vlc": "VLC", "totem": "Videos", "celluloid": "Celluloid", "kodi": "Kodi",
    "kodi.bin": "Kodi", "haruna": "Haruna", "smplayer": "SMPlayer", "mplayer": "MPlayer",
}
STEAM_CLIENT = {
    "steam", "steamwebhelper", "gldriverquery", "gldriverquery64", "vulkandriverquery",
    "vulkandriverquery64", "steam-runtime-check-requirements", "steam-runtime-launcher-service",
}
WINE_SYSTEM = {
    "wineserver", "services.exe", "winedevice.exe", "plugplay.exe", "svchost.exe",
    "rpcss.exe", "conhost.exe", "start.exe", "steam.exe", "tabtip.exe", "rundll32.exe",
    "winemenubuilder.exe", "wineboot.exe", "cmd.exe", "wine", "wine64", "wine-preloader",
    "wine64-preloader", "explorer.exe", "crashpad_handler.exe", "unitycrashhandler64.exe",
}
EXE_SUFFIXES = re.compile(
    r"(-Win64-Shipping|-Win32-Shipping|-WinGDK-Shipping|-Linux-Shipping|-Shipping|[-_](dx1[12]|d3d1[12]|"
    r"vulkan|vk|x64|win64|BE|EAC))$",
    re.IGNORECASE,
)
GAME_NAME = re.compile(r"(-Win64-Shipping|-Shipping|-dx12|-Vulkan)(\.exe)?$|\.exe$", re.IGNORECASE)
GAME_PATH = re.compile(
    r"(/games/|/lutris/|/heroic/|/\.itch/|/itch/apps/|/gog games/|/usr/games/|/\.local/share/games/)",
    re.IGNORECASE,
)
GAME_EXE = re.compile(r"\.(x86_64|x86|x64)$|game", re.IGNORECASE)
UNREAL = re.compile(r"^lib(UE[45]|Unreal)", re.IGNORECASE)
GODOT = re.compile(r"^libgodot", re.IGNORECASE)
WINE = re.compile(r"wine|proton", re.IGNORECASE)
GENERAL = {
    "ffmpeg": "video encode/decode (NVENC/NVDEC)", "blender": "3D rendering",
    "obs": "screen recording and streaming (NVENC)", "hashcat": "password cracking",
    "xmrig": "cryptocurrency miner", "t-rex": "cryptocurrency miner",
    "ethminer": "cryptocurrency miner", "lolminer": "cryptocurrency miner",
    "nbminer": "cryptocurrency miner", "gminer": "cryptocurrency miner",
    "miner": "cryptocurrency miner", "trex": "cryptocurrency miner",
    "resolve": "video editing (DaVinci Resolve)", "gpu_burn": "GPU stress test",
    "boinc": "volunteer computing (BOINC)", "handbrakecli": "video transcoding",
    "ghb": "video transcoding", "darktable": "photo processing", "gimp": "image editing",
    "deviceQuery": "CUDA sample", "bandwidthTest": "CUDA sample", "nbody": "CUDA sample",
    "vectorAdd": "CUDA sample", "matrixMul": "CUDA sample", "simpleGL": "CUDA sample",
}
