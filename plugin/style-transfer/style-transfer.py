#!/usr/bin/env python3
"""GIMP 3 plug-in: Filters > Artistic > Style Transfer...

Sends the active layer (or the selection's bounding box of it) and a style image
to a style-transfer server over gRPC, shows the server's progress (and, if asked,
live previews), then puts the result in a new layer above the source, blended
through the selection, in one undo step. The source layer is never modified.
With "Style applies to" set to the selection, a layer mask or a channel, the whole
layer is sent with that mask as the style's region (the second style, if any, takes
the rest), and the result is not cut by the selection. The layer travels at the
image's precision (8-bit, 16-bit or float) and comes back at it.

GIMP's Python has no grpcio: gRPC is spoken by style_transfer_rpc.py with the
pure-Python packages in ./vendor (see stylegimp/__init__.py).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "vendor")]
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # no C extension here

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GLib, GObject  # noqa: E402

import style_transfer_job as jobs  # noqa: E402
import style_transfer_local as local  # noqa: E402
import style_transfer_rpc as rpc  # noqa: E402
from styletransfer.v1 import wire  # noqa: E402

PROC_NAME = "plug-in-style-transfer"
AGAIN_PROC_NAME = "plug-in-style-transfer-again"
SERVER_PROC_NAME = "plug-in-style-transfer-server"


SAMPLES = {8: "u8", 16: "u16", 32: "float"}  # Babl's sample type for each depth the contract carries


def pixel_format(drawable, depth=8):
    """The perceptual (gamma) Babl format matching the drawable's channels, at `depth`
    bits (8, 16, or 32: float, 0..1; brighter-than-white float values are clipped)."""
    gray = drawable.is_gray()
    alpha = drawable.has_alpha()
    sample = SAMPLES[depth]
    if gray:
        return (f"Y'A {sample}", 2) if alpha else (f"Y' {sample}", 1)
    return (f"R'G'B'A {sample}", 4) if alpha else (f"R'G'B' {sample}", 3)


def image_depth(image):
    """Bits per channel the image's precision is read at: 8, 16 or 32 (float)."""
    return jobs.precision_depth(image.get_precision().value_name)


def read_pixels(drawable, x, y, w, h, depth=8):
    fmt, channels = pixel_format(drawable, depth)
    data = drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, Gegl.AbyssPolicy.CLAMP)
    return bytes(data), channels


def read_region(image, source, config):
    """The style's region over the whole source layer, as a 16-bit gray mask (feathering
    kept): the selection, a layer's mask (Region layer's, or the source's own) or a
    channel; (bytes, width, height, 1, 16). None for "everywhere"."""
    where = config.get_property("region")
    if where == "everywhere":
        return None
    w, h = source.get_width(), source.get_height()
    ox, oy = source.get_offsets()[1:]
    if where == "selection":
        if Gimp.Selection.is_empty(image):
            raise rpc.ServerError("Style applies to the selection, but nothing is selected: select the region, "
                                  "or choose Everywhere.")
        drawable, x, y = image.get_selection(), ox, oy  # the selection is in image coordinates
    elif where == "layer-mask":
        owner = config.get_property("region-layer") or source
        drawable = owner.get_mask()
        if drawable is None:
            raise rpc.ServerError(f"Style applies to the layer mask of {owner.get_name()!r}, which has none: add a "
                                  "layer mask, or choose another region.")
        lx, ly = owner.get_offsets()[1:]
        x, y = ox - lx, oy - ly  # the mask is in its layer's coordinates
    else:
        drawable = config.get_property("region-channel")
        if drawable is None:
            raise rpc.ServerError("Style applies to a channel: choose it in Region channel.")
        x, y = ox, oy
    data = drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, "Y u16", Gegl.AbyssPolicy.NONE)
    return bytes(data), w, h, 1, 16


def fail(procedure, message):
    """An error GIMP shows to the user (and returns to a script); the image is untouched."""
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(message))


class Previewer:
    """A temporary layer that shows the server's previews, outside the undo history."""

    def __init__(self, image, source, x, y, w, h):
        self.image, self.source = image, source
        self.x, self.y, self.w, self.h = x, y, w, h
        self.layer = None

    def show(self, png):
        gi.require_version("GdkPixbuf", "2.0")
        from gi.repository import GdkPixbuf

        loader = GdkPixbuf.PixbufLoader.new_with_type("png")
        loader.write(png)
        loader.close()
        pixbuf = loader.get_pixbuf().scale_simple(self.w, self.h, GdkPixbuf.InterpType.BILINEAR)
        self.image.undo_freeze()
        try:
            if self.layer is None:
                self.layer = Gimp.Layer.new(self.image, "Style transfer preview", self.w, self.h,
                                            Gimp.ImageType.RGB_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
                self.image.insert_layer(self.layer, self.source.get_parent(),
                                        self.image.get_item_position(self.source))
                ox, oy = self.source.get_offsets()[1:]
                self.layer.set_offsets(ox + self.x, oy + self.y)
            rows = pixbuf.get_pixels()
            stride, n = pixbuf.get_rowstride(), pixbuf.get_n_channels()
            rgb = b"".join(bytes(rows[r * stride:r * stride + self.w * n]) for r in range(self.h))
            if n == 4:  # drop the alpha GdkPixbuf may add
                rgb = bytes(b for i, b in enumerate(rgb) if i % 4 != 3)
            buffer = self.layer.get_buffer()
            buffer.set(Gegl.Rectangle.new(0, 0, self.w, self.h), "R'G'B' u8", rgb)
            buffer.flush()
            self.layer.update(0, 0, self.w, self.h)
            Gimp.displays_flush()
        finally:
            self.image.undo_thaw()

    def remove(self):
        if self.layer is not None:
            self.image.undo_freeze()
            try:
                self.image.remove_layer(self.layer)
            finally:
                self.image.undo_thaw()
            self.layer = None


def file_or_layer(config, file_prop, layer_prop, what):
    """A style image: a file's bytes (the server decodes it) or a layer's pixels; None if neither."""
    style_file = config.get_property(file_prop)
    if style_file is not None and style_file.get_path():
        path = style_file.get_path()
        try:
            with open(path, "rb") as f:
                return f.read(), os.path.splitext(os.path.basename(path))[0]
        except OSError as e:
            raise rpc.ServerError(f"Cannot read the {what} {path}: {e.strerror or e}")
    layer = config.get_property(layer_prop)
    if layer is None:
        return None
    data, channels = read_pixels(layer, 0, 0, layer.get_width(), layer.get_height())
    return (data, layer.get_width(), layer.get_height(), channels), layer.get_name()


def _path(config, prop):
    f = config.get_property(prop)
    return f.get_path() if f is not None and f.get_path() else ""


def server_of(config, run_mode):
    """Where the job goes: the server a script names (non-interactive, *Server* set), with
    that call's token and TLS; otherwise the one Style Transfer Server... stored. A token
    typed is kept in the GIMP profile (0600) and cleared from the config, so that GIMP's
    plain-text saved settings never hold it."""
    address = (config.get_property("server") or "").strip()
    if run_mode == Gimp.RunMode.INTERACTIVE or not address:
        return rpc.stored_server(Gimp.directory())
    typed = config.get_property("token") or ""
    token = rpc.resolve_token(typed, _path(config, "token-file"), Gimp.directory(), keep=False)
    return rpc.Server(address=address, token=token, tls=config.get_property("tls"),
                      ca_file=_path(config, "tls-ca-file"))


def run_server(procedure, run_mode, image, drawables, config, data):
    """Style Transfer Server...: the connection settings, stored once for every run, then
    tested (a local server is started as a job would): the server's device, weights and
    presets, or what is wrong. The settings are kept either way."""
    if run_mode == Gimp.RunMode.INTERACTIVE:
        settings = rpc.load_settings(Gimp.directory())
        config.set_property("server", settings.get("address") or wire.DEFAULT_ADDRESS)
        config.set_property("tls", bool(settings.get("tls")))
        for prop, key in (("token-file", "token_file"), ("tls-ca-file", "ca_file")):
            config.set_property(prop, Gio.File.new_for_path(settings[key]) if settings.get(key) else None)
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi

        GimpUi.init(PROC_NAME)
        dialog = GimpUi.ProcedureDialog.new(procedure, config, "Style Transfer Server")
        dialog.fill(None)
        ok = dialog.run()
        dialog.destroy()
        if not ok:
            return cancelled(procedure)
    address = (config.get_property("server") or "").strip() or wire.DEFAULT_ADDRESS
    typed = config.get_property("token") or ""
    try:
        rpc.save_settings(Gimp.directory(), address, _path(config, "token-file"), config.get_property("tls"),
                          _path(config, "tls-ca-file"))
        rpc.resolve_token(typed, _path(config, "token-file"), Gimp.directory(), keep=True)  # a typed one is kept
        config.set_property("token", "")
        server = rpc.stored_server(Gimp.directory())
        Gimp.progress_init("Style transfer: testing " + server.address)
        local.ensure(server, HERE, Gimp.directory(), Gimp.progress_set_text)
        info = rpc.info(server)
    except rpc.ServerError as e:
        return fail(procedure, f"Settings saved; the test failed: {e}")
    weights = "verified" if info.model_verified else "UNVERIFIED: results are meaningless"
    Gimp.message(f"Connected to {server.address}: {info.device} ({info.dtype}), server {info.server_version}, "
                 f"contract {info.contract_version}, weights {info.model} ({weights}), presets "
                 f"{', '.join(p.name for p in info.presets)}.")
    return success(procedure)


def start_image(config, source, x, y, w, h):
    """The image to start from (Start from: Another layer): the start layer's pixels over
    the same part of the image as the content sent, or the whole layer when it does not
    cover that part (the server resizes it); None for the other choices."""
    if config.get_property("init") != "layer":
        return None
    layer = config.get_property("init-layer")
    if layer is None:
        raise rpc.ServerError("Start from another layer: choose the layer to start from in Start layer.")
    area = jobs.init_area(source.get_offsets()[1:], (x, y, w, h), layer.get_offsets()[1:],
                          (layer.get_width(), layer.get_height()))
    ax, ay, aw, ah = area or (0, 0, layer.get_width(), layer.get_height())
    data, channels = read_pixels(layer, ax, ay, aw, ah)
    return data, aw, ah, channels


PREVIEW_MAX_SIDE = 1024  # previews are scaled up to the layer: a full-size PNG per preview is not worth it


def open_dialog(procedure, config, title="Style Transfer"):
    """The dialog, filled from `config`; False when the user cancels."""
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init(PROC_NAME)
    dialog = GimpUi.ProcedureDialog.new(procedure, config, title)
    try:
        organise(dialog, config)
    except Exception as e:  # noqa: BLE001 - an older libgimp: the plain dialog
        print(f"style-transfer: the dialog's layout failed ({e}); showing the plain one", file=sys.stderr)
        dialog.fill(None)
    try:  # Maximum size does not apply at full resolution: greyed out while it is ticked
        dialog.set_sensitive("max-size", True, config, "full-resolution", True)
    except Exception:  # noqa: BLE001 - a libgimp without it: the field stays editable
        pass
    ok = dialog.run()
    dialog.destroy()
    return ok


# The dialog's layout, like GIMP's own filters: what changes every run first, then size
# and memory and the variations in frames; what is set once (start, preview, the server)
# in expanders, closed.
CREATIVE = ("style-file", "style-layer", "style2-file", "style2-layer", "style2-weight", "preset", "strength",
            "style-scale", "smoothness", "preserve-colors", "seed", "region", "region-layer", "region-channel",
            "tileable", "animation")
FRAMES = (("size-frame", "Size and memory", ("max-size", "full-resolution", "max-memory")),
          ("variations-frame", "Variations", ("variations", "vary", "vary-values")))
EXPANDERS = (("advanced", "Advanced", ("init", "init-layer", "live-preview")),)
# The connection settings are Style Transfer Server...'s; in the job procedures they are for scripts.
CONNECTION = ("server", "token", "token-file", "tls", "tls-ca-file")


def organise(dialog, config):
    """Fills the dialog: the server's line (what it offers; the presets are its own),
    the creative settings with the preset as a drop-down of the server's presets,
    frames, expanders."""
    from gi.repository import GimpUi, Gtk

    line, presets, starting = server_state()
    label = dialog.get_label("server-info", line, False, False)
    # GIMP lists a choice argument's values when the procedure is registered, before any
    # server is asked, so "preset" stays a string and its drop-down is built here, bound
    # to the same property (docs/gimp.md, "Options").
    box = dialog.fill_box("creative-box", [f for f in CREATIVE if f != "preset"])
    store = Gtk.ListStore(str, str)  # (name, label)
    fill_presets(store, presets, config.get_property("preset"))
    combo = GimpUi.prop_string_combo_box_new(config, "preset", store, 0, 1)
    row = GimpUi.LabelStringWidget.new("_Preset", combo)
    row.set_tooltip_text("The server's presets (Style Transfer Server... says which server)")
    box.pack_start(row, False, False, 0)
    box.reorder_child(row, CREATIVE.index("preset"))
    row.show_all()
    try:  # its label in the column of the others' (theirs share a size group of GIMP's)
        column = Gtk.SizeGroup.new(Gtk.SizeGroupMode.HORIZONTAL)
        column.add_widget(dialog.get_widget("strength", GObject.TYPE_NONE).get_label())
        column.add_widget(row.get_label())
    except Exception:  # noqa: BLE001 - only the alignment is lost
        pass
    ids = ["server-info", "creative-box"]
    for box_id, title, fields in FRAMES:
        dialog.fill_box(box_id + "-box", list(fields))
        dialog.get_label(box_id + "-title", title, False, False)
        dialog.fill_frame(box_id, box_id + "-title", False, box_id + "-box")
        ids.append(box_id)
    for box_id, title, fields in EXPANDERS:
        dialog.fill_box(box_id + "-box", list(fields))
        dialog.get_label(box_id + "-title", title, False, False)
        dialog.fill_expander(box_id, box_id + "-title", False, box_id + "-box")
        ids.append(box_id)
    dialog.fill(ids)
    if starting is not None:  # the server this dialog started: its line and presets once it is ready
        watch_start(dialog, starting, label, store, combo, config)


def fill_presets(store, presets, current):
    store.clear()
    for name, text in jobs.preset_choices(presets or [], current):
        store.append([name, text])


def watch_start(dialog, server, label, store, combo, config):
    """Asks the starting server every second, without blocking the dialog for long,
    until it answers; then the line and the drop-down say what it offers."""
    from gi.repository import GimpUi

    state = {"source": None}

    def poll():
        info = local.ready_info(server)
        if info is None:
            return True
        label.set_text(info_line(server, info))
        current = config.get_property("preset")
        fill_presets(store, [p.name for p in info.presets], current)  # clearing unsets the combo:
        config.set_property("preset", current)  # the property and the combo are set back
        GimpUi.StringComboBox.set_active(combo, current)
        state["source"] = None
        return False

    state["source"] = GLib.timeout_add(1000, poll)
    dialog.connect("destroy", lambda *_: state["source"] and GLib.source_remove(state["source"]))


def cancelled(procedure):
    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())


class Failed(Exception):
    """Why a job was not made, for the user; the image is unchanged."""


def run(procedure, run_mode, image, drawables, config, data):
    layers = [d for d in drawables if isinstance(d, Gimp.Layer) and not d.is_group()]
    if not layers or len(layers) != len(drawables):
        return fail(procedure, "Style Transfer works on layers (not groups, masks or channels): select one or more.")
    if run_mode == Gimp.RunMode.INTERACTIVE and not open_dialog(procedure, config):
        return cancelled(procedure)
    if config.get_property("animation"):
        try:
            stylize_animation(run_mode, image, config)
        except Failed as e:
            return fail(procedure, str(e))
        return success(procedure)
    # Every selected layer, each result above its source, one undo step; a layer the
    # server cannot take (too large, ...) is named and the others are still made.
    failures = []
    image.undo_group_start()
    try:
        for layer in layers:
            try:
                stylize(procedure, run_mode, image, layer, config)
            except Failed as e:
                failures.append(f"{layer.get_name()}: {e}" if len(layers) > 1 else str(e))
    finally:
        image.undo_group_end()
    if len(failures) == len(layers):
        return fail(procedure, " ".join(failures) if len(layers) == 1 else
                    "No layer was stylized. " + " ".join(failures))
    if failures:
        Gimp.message(f"{len(failures)} of {len(layers)} layers were not stylized. " + " ".join(failures))
    return success(procedure)


def success(procedure):
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def run_again(procedure, run_mode, image, drawables, config, data):
    """Style Transfer Again with Changes: the dialog filled from a result layer's record,
    then a new result from the same source layer (no change: the same pixels)."""
    if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer):
        return fail(procedure, "Again with Changes works on one result layer: select it.")
    result = drawables[0]
    parasite = result.get_parasite(jobs.RECORD_PARASITE)
    if parasite is None:
        return fail(procedure, f"The layer {result.get_name()!r} was not made by Style Transfer (it has no record "
                               "of how): select a result layer, or use Filters > Artistic > Style Transfer.")
    try:
        record = jobs.read_record(parasite.get_data())
        apply_settings(procedure, config, image, record["settings"])
        source = image.get_layer_by_name(record.get("source_layer") or "")
        if source is None:
            raise rpc.ServerError(f"The layer this result was made from, {record.get('source_layer')!r}, is not in "
                                  "this image (renamed or deleted): rename it back, or run Style Transfer on it.")
    except rpc.ServerError as e:
        return fail(procedure, str(e))
    if run_mode == Gimp.RunMode.INTERACTIVE and not open_dialog(procedure, config, "Style Transfer Again"):
        return cancelled(procedure)
    try:
        stylize(procedure, run_mode, image, source, config, record, above=result)
    except Failed as e:
        return fail(procedure, str(e))
    return success(procedure)


ITEM_TYPES = ("GimpLayer", "GimpChannel", "GimpDrawable")  # settings a record keeps by name


def settings_of(procedure, config):
    """The procedure's settings as a record keeps them: files by path, layers and
    channels by name, the rest as they are."""
    settings = {}
    for pspec in procedure.get_arguments():
        name = pspec.get_name()
        if name in jobs.NOT_RECORDED:
            continue
        value = config.get_property(name)
        kind = pspec.value_type.name
        if kind == "GFile":
            value = value.get_path() if value is not None and value.get_path() else ""
        elif kind in ITEM_TYPES:
            value = value.get_name() if value is not None else None
        settings[name] = value
    return settings


def apply_settings(procedure, config, image, settings):
    """`config` set from a record's settings; raises ServerError naming a layer, channel
    or file the record names that is gone."""
    for name, value in settings.items():
        pspec = procedure.find_argument(name)
        if pspec is None:
            continue  # a setting of another plug-in version
        kind = pspec.value_type.name
        if kind == "GFile":
            if value and not os.path.isfile(value):
                raise rpc.ServerError(f"The file this result used for {name}, {value}, is gone.")
            value = Gio.File.new_for_path(value) if value else None
        elif kind in ITEM_TYPES:
            if value is not None:
                found = (image.get_channel_by_name(value) if kind == "GimpChannel"
                         else image.get_layer_by_name(value))
                if found is None:
                    raise rpc.ServerError(f"The {'channel' if kind == 'GimpChannel' else 'layer'} this result used "
                                          f"for {name}, {value!r}, is not in this image.")
                value = found
        config.set_property(name, value)


def plugin_version():
    try:
        with open(os.path.join(HERE, "install.json"), encoding="utf-8") as f:
            return json.load(f).get("version") or "?"
    except (OSError, ValueError):
        return "?"


def chosen_styles(config):
    """(style, second style or None), each (data, name): a file or a layer of this image."""
    style = file_or_layer(config, "style-file", "style-layer", "style image")
    if style is None:
        raise rpc.ServerError("Choose a style image: a file, or another layer of this image.")
    return style, file_or_layer(config, "style2-file", "style2-layer", "second style image")


def connect(server):
    """What the server offers (GetInfo). Nothing answering on this machine: the plug-in
    starts its own server first (and waits while VGG19 loads); a remote or secured one is
    only connected to."""
    Gimp.progress_init("Style transfer: asking " + server.address)
    local.ensure(server, HERE, Gimp.directory(), Gimp.progress_set_text)
    info = rpc.info(server)
    return info


def stylize(procedure, run_mode, image, source, config, record=None, above=None):
    """One run: `source` with `config`'s settings (each variation one job), each result a
    new layer above it (or above `above`) that carries the record of how it was made.
    `record`: the one it repeats (Again), whose styles' hashes are checked against what
    is sent now. Raises Failed, the image unchanged."""
    regions = config.get_property("region") != "everywhere"
    # The part of the layer to send: the selection's bounding box within it, or all of it
    # (and all of it with a region: the mask guides where each style goes, it cuts nothing).
    if regions:
        ok, x, y, w, h = True, 0, 0, source.get_width(), source.get_height()
    else:
        ok, x, y, w, h = source.mask_intersect()
    if not ok or w == 0 or h == 0:
        raise Failed("The selection does not overlap the layer: nothing to stylize.")
    try:
        server = server_of(config, run_mode)
        style, second = chosen_styles(config)
        init_image = start_image(config, source, x, y, w, h)
        info = connect(server)
        preset_name = config.get_property("preset").strip() or "default"
        runs = jobs.variations(config)  # [{}] for one result; else each variation's settings
        jobs.check_seed_variations(config, info, preset_name, runs)
        configs = [jobs.Overridden(config, overrides) for overrides in runs]
        all_params = [jobs.job_params(c, info, preset_name, w, h, second is not None, server.address)
                      for c in configs]
        region = read_region(image, source, config)
        if region is not None:
            rpc.needs_contract(info, jobs.CREATIVE_REVISION, "a style per region", server.address)
        depth = jobs.transfer_depth(info, image_depth(image))
        pixels, channels = read_pixels(source, x, y, w, h, depth)
        styles = [style[0]] + ([second[0]] if second else [])
        # Live previews of several jobs at once would fight over one layer: one result only.
        preview_every = 5 if config.get_property("live-preview") and len(runs) == 1 else 0
        job_list = [rpc.Job(
            content=pixels, width=w, height=h, channels=channels, styles=styles, preset=preset_name,
            params=params, preview_every=preview_every, preview_max_side=min(max(w, h), PREVIEW_MAX_SIDE),
            init_image=init_image, depth=depth, style_masks=[region] if region is not None else [],
        ) for params in all_params]
        jobs.check_limits(info, job_list[0], server.address)
        progresses = [jobs.progress_for(info, preset_name, params) for params in all_params]
    except rpc.ServerError as e:
        raise Failed(str(e)) from None
    style_name = style[1] + (f" + {second[1]}" if second else "")
    sources = [jobs.style_source(name, data if isinstance(data, bytes) else data[0], _path(config, prop))
               for (data, name), prop in zip([style] + ([second] if second else []), ("style-file", "style2-file"))]
    if record is not None and [s["sha256"] for s in record.get("styles", [])] != [s["sha256"] for s in sources]:
        changed = ", ".join(s["name"] for s in sources)
        Gimp.message(f"The style images ({changed}) are not the ones this result was made with: the new result "
                     "will differ from it.")
    preview = Previewer(image, source, x, y, w, h)
    started = f"Style transfer on {server.address}: {info.device} ({info.dtype}), preset {preset_name}"
    if all_params[0]["size"] == 0:
        started += f", full resolution ({w}x{h})"
    if len(runs) > 1:
        started += f", {len(runs)} variations queued at once"
    if not info.model_verified:
        started += ". WARNING: " + wire.unverified_text(info.model)
        if run_mode == Gimp.RunMode.INTERACTIVE:
            Gimp.message(rpc.sentence(wire.unverified_text(info.model)) + ".")
    Gimp.progress_set_text(started)

    def on_event(index, event):
        kind = event.WhichOneof("event")
        text = progresses[index].update(event)  # on a tiled step: which tile of which pass of which step
        if text:
            Gimp.progress_set_text(text if len(runs) == 1 else f"Variation {index + 1} of {len(runs)}: {text}")
        if kind in ("progress", "tile"):
            Gimp.progress_update(sum(p.fraction for p in progresses) / len(progresses))
        elif kind == "preview":
            preview.show(event.preview.png)

    try:
        results = rpc.run_many(server, job_list, on_event)  # queued at once; one failing keeps the others
    except rpc.ServerError as e:
        preview.remove()
        raise Failed(str(e)) from None
    preview.remove()

    # One undo step for the run: for each result a copy of the source with the result
    # merged in through the selection (merge_shadow applies the selection mask, feathering
    # included); with a region, the mask already guided the styles and the server kept the
    # content where no style applies: the result goes in whole. Variations go into a layer
    # group named after the run, the first on top.
    settings = settings_of(procedure, config)
    above = above or source
    image.undo_group_start()
    try:
        parent, position = above.get_parent(), image.get_item_position(above)
        if len(runs) > 1:
            group = Gimp.GroupLayer.new(image, jobs.group_name(source.get_name(), style_name, runs))
            image.insert_layer(group, parent, position)
            parent, position = group, 0
        for index, (overrides, one, params, result) in enumerate(zip(runs, configs, all_params, results)):
            if isinstance(result, rpc.ServerError):
                continue
            # Each variation's record is that one result's settings (Again remakes it alone).
            one_run = dict(settings, **overrides, **{"variations": 1, "vary": "seed", "vary-values": ""})
            made = jobs.make_record(one_run, source.get_name(), sources, info, preset_name, params, plugin_version())
            name = jobs.result_name(source.get_name(), style_name, one.get_property("strength"),
                                    one.get_property("seed"))
            add_result(image, source, parent, position + index, name, made, result.pixels, regions,
                       (x, y, w, h), depth)
    finally:
        image.undo_group_end()
    Gimp.progress_end()
    Gimp.displays_flush()
    failed = [(i, r) for i, r in enumerate(results) if isinstance(r, rpc.ServerError)]
    if failed:
        Gimp.message("; ".join(f"Variation {i + 1} failed: {r}" for i, r in failed))


def stylize_animation(run_mode, image, config):
    """Animation: the image's layers are the frames, the bottom one first (GIMP's order
    for GIF and WebP animations). Each frame after the first goes with the frame before
    it and that frame's result, and the server holds it to that result warped along the
    optical flow (Ruder et al. 2016), so the animation does not flicker. The result is a
    new image, a copy of this one whose layers are the stylized frames (their names, and
    so their timing, kept): File > Export As .gif or .webp makes the animation. This
    image is not changed. Raises Failed."""
    frames = [layer for layer in reversed(image.get_layers())]
    if any(layer.is_group() for layer in frames):
        raise Failed("Animation: the frames are the image's layers; put the frames at the top level (no groups).")
    w, h = frames[0].get_width(), frames[0].get_height()
    odd = [f.get_name() for f in frames if (f.get_width(), f.get_height()) != (w, h)]
    if odd:
        raise Failed(f"Animation: every frame must have the first frame's size, {w}x{h}; "
                     f"{', '.join(odd)} differ.")
    if config.get_property("region") != "everywhere" or config.get_property("variations") > 1 \
            or config.get_property("vary") != "seed":
        raise Failed("Animation: regions and variations are for single layers; set Style applies to: Everywhere "
                     "and Variations: 1.")
    try:
        server = server_of(config, run_mode)
        style, second = chosen_styles(config)
        info = connect(server)
        rpc.needs_contract(info, jobs.SEQUENCE_REVISION, "animations", server.address)
        preset_name = config.get_property("preset").strip() or "default"
        params = jobs.job_params(config, info, preset_name, w, h, second is not None, server.address)
        depth = jobs.transfer_depth(info, image_depth(image))
        styles = [style[0]] + ([second[0]] if second else [])
    except rpc.ServerError as e:
        raise Failed(str(e)) from None
    out = image.duplicate()  # the frames' names, order, offsets and modes: the animation's timing
    targets = list(reversed(out.get_layers()))
    previous = None
    try:
        for index, (frame, target) in enumerate(zip(frames, targets)):
            pixels, channels = read_pixels(frame, 0, 0, w, h, depth)
            job = rpc.Job(content=pixels, width=w, height=h, channels=channels, styles=styles, preset=preset_name,
                          params=params, depth=depth, previous=previous)
            progress = jobs.progress_for(info, preset_name, dict(params, scales=1) if previous else params)

            def on_event(_, event, index=index, progress=progress):
                text = progress.update(event)
                if text:
                    Gimp.progress_set_text(f"Frame {index + 1} of {len(frames)}: {text}")
                if event.WhichOneof("event") in ("progress", "tile"):
                    Gimp.progress_update((index + progress.fraction) / len(frames))

            if index == 0:
                jobs.check_limits(info, job, server.address)
            (result,) = rpc.run_many(server, [job], on_event)
            if isinstance(result, rpc.ServerError):
                raise result
            buffer = target.get_buffer()
            buffer.set(Gegl.Rectangle.new(0, 0, w, h), pixel_format(target, depth)[0], result.pixels)
            buffer.flush()
            target.update(0, 0, w, h)
            previous = ((pixels, w, h, channels, depth), (result.pixels, w, h, channels, depth))
    except rpc.ServerError as e:
        out.delete()  # a half-stylized copy would pass for a result
        raise Failed(f"Frame {index + 1} of {len(frames)}: {e}") from None
    Gimp.progress_end()
    if run_mode == Gimp.RunMode.INTERACTIVE:
        Gimp.Display.new(out)
    Gimp.displays_flush()


def add_result(image, source, parent, position, name, record, pixels, whole, area, depth):
    """A result layer: a copy of the source with `pixels` over `area` (x, y, w, h), whole
    or through the selection, carrying its record; inserted at `position` in `parent`."""
    x, y, w, h = area
    layer = source.copy()  # its parasites too: the record below replaces a copied one
    layer.set_name(name)
    layer.attach_parasite(Gimp.Parasite.new(jobs.RECORD_PARASITE, Gimp.PARASITE_PERSISTENT, list(record)))
    image.insert_layer(layer, parent, position)
    fmt = pixel_format(layer, depth)[0]
    if whole:
        buffer = layer.get_buffer()
        buffer.set(Gegl.Rectangle.new(x, y, w, h), fmt, pixels)
        buffer.flush()
    else:
        shadow = layer.get_shadow_buffer()
        shadow.set(Gegl.Rectangle.new(x, y, w, h), fmt, pixels)
        shadow.flush()
        layer.merge_shadow(True)
    layer.update(x, y, w, h)
    return layer


def server_state():
    """The dialog's server line, the server's preset names (None when it does not answer),
    and the server when this call started it (None otherwise)."""
    try:
        server = rpc.stored_server(Gimp.directory())
        if local.health(server) == "DOWN" and local.may_start(server):
            # Started now, so that VGG19 loads while the settings are chosen; OK waits for it.
            local.start(server, HERE, Gimp.directory())
            return (f"Starting the style-transfer server on {server.address} (this machine): the job starts when "
                    "it is ready; the server exits after a while unused."), None, server
        info = rpc.info(server, timeout=3.0)
    except rpc.ServerError as e:
        return str(e), None, None
    return info_line(server, info), [p.name for p in info.presets], None


def info_line(server, info):
    """One line for the dialog: the server's device, presets and weights."""
    text = (f"Server {server.address}: {info.device} ({info.dtype}), presets "
            f"{', '.join(p.name for p in info.presets)}")
    return text + ("" if info.model_verified else ". WARNING: UNVERIFIED weights: results are meaningless")


class StyleTransfer(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROC_NAME, AGAIN_PROC_NAME, SERVER_PROC_NAME]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        if name == SERVER_PROC_NAME:
            procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run_server, None)
            procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.ALWAYS)
            procedure.set_menu_label("Style Transfer Ser_ver...")
            procedure.add_menu_path("<Image>/Filters/Artistic")
            procedure.set_documentation(
                "Where the style-transfer server is and how to reach it",
                "The server's address, token and TLS, stored once for every Style Transfer run, and a test of "
                "the connection that shows the server's device, weights and presets. A server on this machine "
                "is started when nothing answers there.",
                name,
            )
            procedure.set_attribution("gimp-style-transfer", "gimp-style-transfer", "2026")
            add_server_arguments(procedure, wire.DEFAULT_ADDRESS)
            return procedure
        again = name == AGAIN_PROC_NAME
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run_again if again else run, None)
        procedure.set_image_types("RGB*, GRAY*")
        many = Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE if again else many)
        if again:
            procedure.set_menu_label("Style Transfer _Again with Changes...")
            procedure.add_menu_path("<Image>/Filters/Artistic")
            procedure.add_menu_path("<Layers>")
            procedure.set_documentation(
                "Style Transfer again, from how this result layer was made",
                "Opens the Style Transfer dialog filled with the settings this result layer was made with (its "
                "record) and makes a new result from the same source layer; with no change, the same pixels.",
                name,
            )
        else:
            procedure.set_menu_label("_Style Transfer...")
            procedure.add_menu_path("<Image>/Filters/Artistic")
            procedure.set_documentation(
                "Paint the layer in the style of another image (neural style transfer)",
                "Sends the layer (or the selected part of it) and a style image to a style-transfer "
                "server (style-transfer serve), and puts the result in a new layer above it.",
                name,
            )
        procedure.set_attribution("gimp-style-transfer", "gimp-style-transfer", "2026")
        add_arguments(procedure)
        return procedure


def add_server_arguments(procedure, address):
    """The connection settings: the Server... procedure's, and the job procedures' for
    scripts (an empty *Server* there: the stored ones)."""
    flags = GObject.ParamFlags.READWRITE
    procedure.add_string_argument("server", "Ser_ver", "Address of the style-transfer server, HOST:PORT" + (
                                  "" if address else " (empty: the one Style Transfer Server... stored)"),
                                  address, flags)
    procedure.add_string_argument("token", "_Token",
                                  "The server's token, typed once: kept in your GIMP profile "
                                  f"({rpc.TOKEN_FILE_NAME}, readable by you only), never in GIMP's saved "
                                  "settings", "", flags)
    procedure.add_file_argument("token-file", "Token _file", "A file holding the server's token",
                                Gimp.FileChooserAction.OPEN, True, None, flags)
    procedure.add_boolean_argument("tls", "Use TL_S", "Connect with TLS (the server runs with --tls-cert)",
                                   False, flags)
    procedure.add_file_argument("tls-ca-file", "TLS _CA file",
                                "The authority that signed the server's certificate (empty: the system's)",
                                Gimp.FileChooserAction.OPEN, True, None, flags)


def add_arguments(procedure):
    """The settings both job procedures share (Again sets them from a result's record)."""
    flags = GObject.ParamFlags.READWRITE
    procedure.add_file_argument("style-file", "Style _image", "The style image file",
                                Gimp.FileChooserAction.OPEN, True, None, flags)
    procedure.add_layer_argument("style-layer", "...or style la_yer",
                                 "A layer of this image to take the style from (if no file is chosen)",
                                 True, flags)
    procedure.add_file_argument("style2-file", "Second st_yle image", "A second style image file (optional)",
                                Gimp.FileChooserAction.OPEN, True, None, flags)
    procedure.add_layer_argument("style2-layer", "...or second style layer",
                                 "A layer to take a second style from (optional)", True, flags)
    procedure.add_double_argument("style2-weight", "Second style's _weight",
                                  "Share of the second style in the blend (0: none, 1: only it)",
                                  0.0, 1.0, 0.5, flags)
    # A string, not a Gimp.Choice: GIMP fixes a choice's list when the procedure is made,
    # before any server is asked, and a script naming a preset only its server has (a
    # custom one) would be refused by GIMP itself. The dialog shows it as a drop-down of
    # the server's presets (organise).
    procedure.add_string_argument("preset", "_Preset",
                                  "One of the server's presets, which the server defines (the dialog's "
                                  "server line and style-transfer info list them)", "default", flags)
    procedure.add_double_argument("strength", "Style _strength", "Multiplies the preset's style weight",
                                  *jobs.RANGES["strength"], 1.0, flags)
    procedure.add_int_argument("max-size", "_Maximum size",
                               "Longest side the server works at, px (0: the preset's; the server's "
                               "limit applies; not used at full resolution)", 0, 16384, 0, flags)
    procedure.add_boolean_argument("full-resolution", "_Full resolution",
                                   "Work at the layer's own size (Maximum size is then not used): what does "
                                   "not fit in the server's memory is worked tile by tile; the server's "
                                   "max_work_pixels still limits the layer", False, flags)
    procedure.add_double_argument("max-memory", "Memory li_mit (GiB)",
                                  "Memory the job may use on the server; what does not fit is worked tile by "
                                  "tile (0: the server's budget; never more than it)", 0.0, 1024.0, 0.0, flags)
    procedure.add_double_argument("style-scale", "Style s_cale",
                                  "The style image's size relative to the result's (0: the preset's)",
                                  0.0, jobs.RANGES["style-scale"][1], 0.0, flags)
    procedure.add_double_argument("smoothness", "S_moothness",
                                  "Total-variation weight: smooths fine noise (0: the preset's)",
                                  0.0, 1000.0, 0.0, flags)
    init = Gimp.Choice.new()
    for index, (nick, label) in enumerate((("preset", "The preset's"), ("content", "The layer"),
                                           ("noise", "Noise"), ("layer", "Another layer"))):
        init.add(nick, index, label, "")
    procedure.add_choice_argument("init", "Start _from",
                                  "The image the optimization starts from: the preset's start, the layer, "
                                  "noise, or another layer (Start layer), e.g. an earlier result",
                                  init, "preset", flags)
    procedure.add_layer_argument("init-layer", "...start la_yer",
                                 "The layer to start from when Start from is Another layer, e.g. an earlier "
                                 "result at a smaller size: its part over the same area as the layer's "
                                 "(the whole layer, resized, if it does not cover that area)", True, flags)
    region = Gimp.Choice.new()
    for index, (nick, label) in enumerate((("everywhere", "Everywhere (the selection cuts the result)"),
                                           ("selection", "The selection"), ("layer-mask", "A layer mask"),
                                           ("channel", "A channel"))):
        region.add(nick, index, label, "")
    procedure.add_choice_argument("region", "Style appl_ies to",
                                  "Where the style goes: everywhere (a selection then cuts the result), or a "
                                  "region from the selection, a layer's mask or a channel (feathering kept): "
                                  "the style's statistics are matched there only, the second style (if any) "
                                  "takes the rest, and without one the rest keeps the layer",
                                  region, "everywhere", flags)
    procedure.add_layer_argument("region-layer", "...region's la_yer",
                                 "The layer whose mask is the region (empty: the layer being stylized)",
                                 True, flags)
    procedure.add_channel_argument("region-channel", "...region's c_hannel",
                                   "The channel that is the region (Style applies to: A channel)", True, flags)
    procedure.add_boolean_argument("tileable", "Til_eable",
                                   "Make the result tile seamlessly in both directions (a texture)", False, flags)
    procedure.add_boolean_argument("animation", "_Animation (the layers are its frames)",
                                   "Stylize every layer as a frame of an animation, the bottom one first, each "
                                   "held to the one before so that nothing flickers; the result is a new image "
                                   "with the same layers (export it as GIF or WebP)", False, flags)
    procedure.add_boolean_argument("preserve-colors", "Preserve colo_urs",
                                   "Keep the layer's colours (luminance-only transfer)", False, flags)
    procedure.add_int_argument("seed", "Random s_eed", "Same seed and settings give the same result",
                               0, 2**31 - 1, 0, flags)
    procedure.add_int_argument("variations", "_Variations",
                               "How many results to make in one go (vary: seed): seeds from Random seed on; each "
                               "result is a layer in a group named after the run", 1, jobs.MAX_VARIATIONS, 1, flags)
    vary = Gimp.Choice.new()
    for index, (nick, label) in enumerate((("seed", "Seed"), ("strength", "Style strength"),
                                           ("style-scale", "Style scale"))):
        vary.add(nick, index, label, "")
    procedure.add_choice_argument("vary", "Var_y", "What the variations differ in: the seed (Variations sets how "
                                  "many), or the strength or style scale (one result per value listed)",
                                  vary, "seed", flags)
    procedure.add_string_argument("vary-values", "Variation va_lues",
                                  "For Vary: strength or style scale, the values, e.g. 0.5, 1, 2", "", flags)
    procedure.add_boolean_argument("live-preview", "_Live preview",
                                   "Show the work in progress in a temporary layer", True, flags)
    add_server_arguments(procedure, "")


Gimp.main(StyleTransfer.__gtype__, sys.argv)
