#!/usr/bin/env python3
"""GIMP 3 plug-in: Filters > Artistic > Style Transfer...

Sends the active layer (or the selection's bounding box of it) and a style image
to a style-transfer server over gRPC, shows the server's progress (and, if asked,
live previews), then puts the result in a new layer above the source, blended
through the selection, in one undo step. The source layer is never modified.

GIMP's Python has no grpcio: gRPC is spoken by style_transfer_rpc.py with the
pure-Python packages in ./vendor (see stylegimp/__init__.py).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "vendor")]
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # no C extension here

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

import style_transfer_rpc as rpc  # noqa: E402

PROC_NAME = "plug-in-style-transfer"
QUALITY = {"draft": "draft", "standard": "default", "high": "high"}
BASE_STYLE_WEIGHT = 1e6  # the presets' style_weight; "strength" multiplies it


def pixel_format(drawable):
    """The 8-bit, perceptual (gamma) Babl format matching the drawable's channels."""
    gray = drawable.is_gray()
    alpha = drawable.has_alpha()
    if gray:
        return ("Y'A u8", 2) if alpha else ("Y' u8", 1)
    return ("R'G'B'A u8", 4) if alpha else ("R'G'B' u8", 3)


def read_pixels(drawable, x, y, w, h):
    fmt, channels = pixel_format(drawable)
    data = drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, Gegl.AbyssPolicy.CLAMP)
    return bytes(data), channels


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


def style_input(config, image):
    """The style image: a file's bytes (the server decodes it) or another layer's pixels."""
    style_file = config.get_property("style-file")
    if style_file is not None and style_file.get_path():
        path = style_file.get_path()
        try:
            with open(path, "rb") as f:
                return f.read(), os.path.splitext(os.path.basename(path))[0]
        except OSError as e:
            raise rpc.ServerError(f"Cannot read the style image {path}: {e.strerror or e}")
    layer = config.get_property("style-layer")
    if layer is None:
        raise rpc.ServerError("Choose a style image: a file, or another layer of this image.")
    data, channels = read_pixels(layer, 0, 0, layer.get_width(), layer.get_height())
    return (data, layer.get_width(), layer.get_height(), channels), layer.get_name()


def run(procedure, run_mode, image, drawables, config, data):
    if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer):
        return fail(procedure, "Style Transfer works on one layer: select a single layer.")
    source = drawables[0]

    if run_mode == Gimp.RunMode.INTERACTIVE:
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi

        GimpUi.init(PROC_NAME)
        dialog = GimpUi.ProcedureDialog.new(procedure, config, "Style Transfer")
        dialog.fill(None)
        if not dialog.run():
            dialog.destroy()
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        dialog.destroy()

    # The part of the layer to send: the selection's bounding box within it, or all of it.
    ok, x, y, w, h = source.mask_intersect()
    if not ok or w == 0 or h == 0:
        return fail(procedure, "The selection does not overlap the layer: nothing to stylize.")
    pixels, channels = read_pixels(source, x, y, w, h)
    try:
        style, style_name = style_input(config, image)
    except rpc.ServerError as e:
        return fail(procedure, str(e))

    seed = config.get_property("seed")
    job = rpc.Job(
        content=pixels, width=w, height=h, channels=channels, styles=[style],
        preset=QUALITY.get(config.get_property("quality"), "default"),
        params={
            "size": min(config.get_property("max-size"), max(w, h)),
            "style_weight": BASE_STYLE_WEIGHT * config.get_property("strength"),
            "preserve_colors": "luminance" if config.get_property("preserve-colors") else "none",
            "seed": seed,
        },
        preview_every=5 if config.get_property("live-preview") else 0,
        preview_max_side=max(w, h),
    )
    address = config.get_property("server")
    preview = Previewer(image, source, x, y, w, h)
    Gimp.progress_init("Style transfer: connecting to " + address)

    def on_event(event):
        kind = event.WhichOneof("event")
        text = rpc.describe(event)
        if text:
            Gimp.progress_set_text(text)
        if kind == "progress":
            p = event.progress
            done = (p.scale - 1 + p.step / max(1, p.steps)) / max(1, p.scales)
            Gimp.progress_update(min(1.0, done))
        elif kind == "preview":
            preview.show(event.preview.png)

    try:
        result = rpc.run(address, job, on_event)
    except rpc.ServerError as e:
        preview.remove()
        return fail(procedure, str(e))
    preview.remove()

    # One undo step: a copy of the source with the result merged in through the
    # selection (merge_shadow applies the selection mask, feathering included).
    image.undo_group_start()
    try:
        layer = source.copy()
        layer.set_name(f"{source.get_name()} - {style_name} (seed {seed})")
        image.insert_layer(layer, source.get_parent(), image.get_item_position(source))
        shadow = layer.get_shadow_buffer()
        shadow.set(Gegl.Rectangle.new(x, y, w, h), pixel_format(layer)[0], result.pixels)
        shadow.flush()
        layer.merge_shadow(True)
        layer.update(x, y, w, h)
    finally:
        image.undo_group_end()
    Gimp.progress_end()
    Gimp.displays_flush()
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


class StyleTransfer(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROC_NAME]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("_Style Transfer...")
        procedure.add_menu_path("<Image>/Filters/Artistic")
        procedure.set_documentation(
            "Paint the layer in the style of another image (neural style transfer)",
            "Sends the layer (or the selected part of it) and a style image to a style-transfer "
            "server (style-transfer serve), and puts the result in a new layer above it.",
            name,
        )
        procedure.set_attribution("gimp-style-transfer", "gimp-style-transfer", "2026")
        flags = GObject.ParamFlags.READWRITE
        procedure.add_file_argument("style-file", "Style _image", "The style image file",
                                    Gimp.FileChooserAction.OPEN, True, None, flags)
        procedure.add_layer_argument("style-layer", "...or style la_yer",
                                     "A layer of this image to take the style from (if no file is chosen)",
                                     True, flags)
        procedure.add_double_argument("strength", "Style _strength", "Multiplies the style weight",
                                      0.01, 100.0, 1.0, flags)
        quality = Gimp.Choice.new()
        for index, (nick, label) in enumerate((("draft", "Draft"), ("standard", "Standard"), ("high", "High"))):
            quality.add(nick, index, label, "")
        procedure.add_choice_argument("quality", "_Quality", "Speed against quality", quality, "standard", flags)
        procedure.add_int_argument("max-size", "_Maximum size", "Longest side the server works at, px",
                                   32, 4096, 512, flags)
        procedure.add_boolean_argument("preserve-colors", "_Preserve colours",
                                       "Keep the layer's colours (luminance-only transfer)", False, flags)
        procedure.add_int_argument("seed", "Random s_eed", "Same seed and settings give the same result",
                                   0, 2**31 - 1, 0, flags)
        procedure.add_string_argument("server", "Ser_ver", "Address of the style-transfer server",
                                      "127.0.0.1:50051", flags)
        procedure.add_boolean_argument("live-preview", "_Live preview",
                                       "Show the work in progress in a temporary layer", True, flags)
        return procedure


Gimp.main(StyleTransfer.__gtype__, sys.argv)
