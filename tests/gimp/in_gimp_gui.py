# Runs INSIDE the full GIMP 3 UI (gimp-3.0 under xvfb-run, python-fu-eval).
# 1. Shows the photo in a window, runs the plug-in non-interactively, screenshots
#    the result, presses Ctrl+Z once in the image window (xdotool) and records
#    whether that one undo step removed the result layer.
# 2. Variations (a group of three) and a result with a style per region: screenshots.
# 3. Opens the plug-in's dialog (an interactive run), screenshots it, picks the server's
#    last preset from the drop-down and presses OK; opens the server settings' dialog,
#    screenshots it, presses Escape.
# Screenshots are xwd files converted to PNG by GIMP itself. Parameters from PARAMS.
import json
import os
import subprocess
import time
import traceback

P = json.load(open(PARAMS))  # noqa: F821 - defined by the batch command
OUT = P["shots"]
os.makedirs(OUT, exist_ok=True)
pdb = Gimp.get_pdb()
report = {}


def style_transfer(image, layer, run_mode, **props):
    proc = pdb.lookup_procedure("plug-in-style-transfer")
    config = proc.create_config()
    config.set_property("run-mode", run_mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", layer if isinstance(layer, list) else [layer])
    for key, value in props.items():
        config.set_property(key, value)
    return proc.run(config).index(0).value_nick


def xdo(*args):
    r = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def wait_for(predicate, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def shot(name, window=None):
    path = f"{OUT}/{name}.xwd"
    subprocess.run(["xwd", "-silent", "-out", path, *(["-id", window] if window else ["-root"])], check=True, timeout=30)
    return path


try:
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(P["photo"]))
    display = Gimp.Display.new(image)
    Gimp.displays_flush()
    layer = image.get_layers()[0]
    image.select_rectangle(Gimp.ChannelOps.REPLACE, *P["selection"])
    report["status"] = style_transfer(
        image, layer, Gimp.RunMode.NONINTERACTIVE,
        **{"style-file": Gio.File.new_for_path(P["style"]), "server": P["server"], "preset": "draft",
           "max-size": 128, "seed": 1})
    report["layers_after_run"] = [l.get_name() for l in image.get_layers()]
    Gimp.displays_flush()
    time.sleep(2)
    shot("result")
    windows = xdo("search", "--onlyvisible", "--name", "GIMP$").split()
    if windows:
        xdo("windowfocus", "--sync", windows[0])
        xdo("key", "--clearmodifiers", "ctrl+z")
        wait_for(lambda: len(image.get_layers()) == 1, 15)
    report["layers_after_one_undo"] = [l.get_name() for l in image.get_layers()]

    # Two layers selected: two results, each above its source, one undo step.
    copy = Gimp.Layer.new_from_drawable(image.get_layers()[0], image)
    image.insert_layer(copy, None, 0)
    copy.set_name("Copy")
    report["multi_status"] = style_transfer(
        image, [copy, image.get_layers()[1]], Gimp.RunMode.NONINTERACTIVE,
        **{"style-file": Gio.File.new_for_path(P["style"]), "server": P["server"], "preset": "draft",
           "max-size": 64, "seed": 2})
    report["layers_after_multi"] = [l.get_name() for l in image.get_layers()]
    Gimp.displays_flush()
    if windows:
        xdo("windowfocus", "--sync", windows[0])
        xdo("key", "--clearmodifiers", "ctrl+z")
        wait_for(lambda: len(image.get_layers()) == 2, 15)
    report["layers_after_multi_undo"] = [l.get_name() for l in image.get_layers()]

    # Variations in one go: a group of three strengths (README's picture of the Layers dock).
    image.remove_layer(image.get_layers()[0])  # the copy: Background alone again
    Gimp.Selection.none(image)
    report["variations_status"] = style_transfer(
        image, image.get_layers()[0], Gimp.RunMode.NONINTERACTIVE,
        **{"style-file": Gio.File.new_for_path(P["style"]), "server": P["server"], "preset": "draft",
           "max-size": 128, "vary": "strength", "vary-values": "0.3, 1, 3", "seed": 1})
    group = image.get_layers()[0]
    report["variations_group"] = [l.get_name() for l in group.get_children()] if group.is_group() else []
    group.set_expanded(True)
    Gimp.displays_flush()
    time.sleep(2)
    shot("variations")
    image.remove_layer(group)

    # A style per region: the elliptic selection takes the first style, the second style the rest.
    image.select_ellipse(Gimp.ChannelOps.REPLACE, *P["ellipse"])
    report["regions_status"] = style_transfer(
        image, image.get_layers()[-1], Gimp.RunMode.NONINTERACTIVE,
        **{"style-file": Gio.File.new_for_path(P["style"]), "style2-file": Gio.File.new_for_path(P["style2"]),
           "region": "selection", "server": P["server"], "preset": "draft", "max-size": 192, "seed": 1})
    report["layers_after_regions"] = [l.get_name() for l in image.get_layers()]
    Gimp.Selection.none(image)
    Gimp.displays_flush()
    time.sleep(2)
    shot("regions")

    # The connection, stored once (Style Transfer Server...): the dialog's server line reads it.
    server_proc = pdb.lookup_procedure("plug-in-style-transfer-server")
    server_config = server_proc.create_config()
    server_config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    server_config.set_property("server", P["server"])
    report["server_settings"] = server_proc.run(server_config).index(0).value_nick

    helper = subprocess.Popen(["sh", "-c",
        f'xdotool search --sync --onlyvisible --name "Style Transfer" > {OUT}/dialog.wid; '
        f'xdotool mousemove 4000 4000; sleep 3; '
        f'xwd -silent -id $(head -1 {OUT}/dialog.wid) -out {OUT}/dialog.xwd; '
        # The preset drop-down (Alt+P) lists the server's presets: End picks the last,
        # the test server's own "tiny"; Alt+O is OK.
        f'xdotool windowfocus --sync $(head -1 {OUT}/dialog.wid) key alt+p; sleep 0.5; xdotool key End; '
        f'sleep 0.5; xdotool key alt+o'])
    # The dialog as a user sees it: a style chosen, the test's server (which it then asks for its presets).
    report["dialog_status"] = style_transfer(
        image, image.get_layers()[0], Gimp.RunMode.INTERACTIVE,
        **{"style-file": Gio.File.new_for_path(P["style"]), "server": P["server"], "preset": "draft",
           "max-size": 64})
    helper.wait(timeout=60)
    made = image.get_layers()[0].get_parasite("style-transfer-record")
    report["dialog_preset"] = json.loads(bytes(made.get_data()).decode())["preset"] if made else None
    if made:
        image.remove_layer(image.get_layers()[0])

    # The connection's own dialog (Filters > Artistic > Style Transfer Server...), as a user opens it.
    helper = subprocess.Popen(["sh", "-c",
        f'xdotool search --sync --onlyvisible --name "^Style Transfer Server$" > {OUT}/server.wid; '
        f'xdotool mousemove 4000 4000; sleep 2; '
        f'xwd -silent -id $(head -1 {OUT}/server.wid) -out {OUT}/server.xwd; '
        f'xdotool windowfocus --sync $(head -1 {OUT}/server.wid) key Escape'])
    server_config = server_proc.create_config()
    server_config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    report["server_dialog_status"] = server_proc.run(server_config).index(0).value_nick
    helper.wait(timeout=60)
    for name in ("result", "dialog", "variations", "regions", "server"):
        path = f"{OUT}/{name}.xwd"
        if os.path.exists(path):
            shot_image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))
            Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, shot_image, Gio.File.new_for_path(path[:-4] + ".png"), None)
            shot_image.delete()
    display.delete()
    image.delete()
except Exception:
    report["error"] = traceback.format_exc()
with open(P["out"], "w") as f:
    json.dump(report, f, indent=1)
