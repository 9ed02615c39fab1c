# Runs INSIDE GIMP 3 (python-fu-eval; Gimp, Gegl, Gio, GLib are already imported).
# Reads its parameters from the JSON file named by PARAMS (set by the -b command
# before this file is exec'd), calls the installed plug-in through the PDB as a
# script would, and writes what it observed to params["out"] as JSON. The host
# side (tests/test_gimp_real.py) makes the assertions.
import json
import traceback

P = json.load(open(PARAMS))  # noqa: F821 - defined by the batch command
pdb = Gimp.get_pdb()
report = {"cases": {}}


def native_format(drawable):
    if drawable.is_gray():
        return ("Y'A u8", 2) if drawable.has_alpha() else ("Y' u8", 1)
    return ("R'G'B'A u8", 4) if drawable.has_alpha() else ("R'G'B' u8", 3)


def pixels(drawable):
    fmt, n = native_format(drawable)
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.CLAMP)), n


def run_procedure(name, image, layer, **props):
    proc = pdb.lookup_procedure(name)
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for key, value in props.items():
        config.set_property(key, value)
    status = proc.run(config).index(0)
    return status.value_nick, ("" if status == Gimp.PDBStatusType.SUCCESS else (pdb.get_last_error() or ""))


def style_transfer(image, layer, **props):
    return run_procedure("plug-in-style-transfer", image, layer, **props)


def copy_below(image, source, name):
    """A copy of `source`, named `name`, inserted below the top layer."""
    layer = Gimp.Layer.new_from_drawable(source, image)
    image.insert_layer(layer, None, 1)
    layer.set_name(name)
    return layer


def load(path):
    return Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))


def on_photo(**props):
    """The photo's layer through the plug-in with the style file and `props`: the status,
    the message and how many layers the image has afterwards."""
    image = load(P["photo"])
    try:
        source = image.get_layers()[0]
        status, message = style_transfer(image, source, **{"style-file": Gio.File.new_for_path(P["style"]), **props})
        return {"status": status, "message": message, "layers": len(image.get_layers())}
    finally:
        image.delete()


def case_selection():
    """A photograph with alpha on a larger canvas (layer offsets), a rectangular selection."""
    image = load(P["photo"])
    try:
        image.resize(image.get_width() + 20, image.get_height() + 14, 12, 7)  # moves the layer to (12, 7)
        source = image.get_layers()[0]
        before, n = pixels(source)
        sel = P["selection"]  # [x, y, w, h] in image coordinates
        image.select_rectangle(Gimp.ChannelOps.REPLACE, *sel)
        status, message = style_transfer(
            image, source, **{"style-file": Gio.File.new_for_path(P["style"]), "server": P["server"],
                              "preset": "draft", "max-size": 48, "seed": 3, "live-preview": True})
        layers = image.get_layers()
        out = {"status": status, "message": message, "layer_names": [l.get_name() for l in layers],
               "channels": n, "width": source.get_width(), "height": source.get_height(),
               "source_offsets": list(source.get_offsets()[1:]), "source_unchanged": pixels(source)[0] == before}
        if len(layers) == 2:
            new = layers[0]
            after, _ = pixels(new)
            out.update(new_size=[new.get_width(), new.get_height()], new_offsets=list(new.get_offsets()[1:]))
            ox, oy = out["source_offsets"]
            sx, sy, sw, sh = sel
            inside_diff = outside_diff = alpha_diff = 0
            w = source.get_width()
            for y in range(source.get_height()):
                for x in range(w):
                    i = (y * w + x) * n
                    a, b = before[i:i + n], after[i:i + n]
                    if a[-1] != b[-1]:
                        alpha_diff += 1
                    inside = sx <= x + ox < sx + sw and sy <= y + oy < sy + sh
                    if a != b:
                        if inside:
                            inside_diff += 1
                        else:
                            outside_diff += 1
            out.update(inside_changed=inside_diff, outside_changed=outside_diff, alpha_changed=alpha_diff)
        return out
    finally:
        image.delete()


def case_feathered():
    """An elliptical selection feathered by 8 px: the result is blended by the mask."""
    image = load(P["photo"])
    try:
        source = image.get_layers()[0]
        before, n = pixels(source)
        image.select_ellipse(Gimp.ChannelOps.REPLACE, 8, 8, 48, 48)
        Gimp.Selection.feather(image, 8.0)
        status, message = style_transfer(
            image, source, **{"style-file": Gio.File.new_for_path(P["style"]), "server": P["server"],
                              "preset": "draft", "max-size": 48, "live-preview": False})
        after, _ = pixels(image.get_layers()[0])
        w, h = source.get_width(), source.get_height()
        mask = bytes(image.get_selection().get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "Y u8",
                                                              Gegl.AbyssPolicy.NONE))
        sums = {"none": [0, 0], "partial": [0, 0], "full": [0, 0]}
        for i, m in enumerate(mask):
            diff = sum(abs(a - b) for a, b in zip(before[i * n:i * n + n - 1], after[i * n:i * n + n - 1]))
            key = "none" if m == 0 else "full" if m == 255 else "partial"
            sums[key][0] += diff
            sums[key][1] += 1
        return {"status": status, "message": message,
                "mean_diff": {k: (v[0] / v[1] if v[1] else None) for k, v in sums.items()},
                "counts": {k: v[1] for k, v in sums.items()}}
    finally:
        image.delete()


def case_server_down():
    """A remote address where nothing answers (TEST-NET-1): an error, nothing started."""
    return on_photo(**{"server": "192.0.2.1:9", "preset": "draft", "max-size": 48})


def case_auto_start():
    """Nothing answers on this machine's address: the plug-in starts its server itself.
    `ended`: when the job came back (the wall clock, which the host shares)."""
    import time

    out = on_photo(**{"server": P["auto_server"], "preset": "draft", "max-size": 40})
    out["ended"] = time.time()
    return out


def case_auto_start_fails():
    """The recorded server cannot start: why, and where its log is."""
    return on_photo(**{"server": P["auto_server"], "preset": "draft", "max-size": 40})


def case_gray_style_layer():
    """A grayscale image; the style comes from another layer of the same image."""
    image = load(P["photo"])
    try:
        image.convert_grayscale()
        source = image.get_layers()[0]
        style = copy_below(image, source, "style layer")
        before, n = pixels(source)
        status, message = style_transfer(
            image, source, **{"style-layer": style, "server": P["server"], "preset": "draft", "max-size": 40,
                              "live-preview": False})
        new = image.get_layers()[0]
        return {"status": status, "message": message, "channels": n, "layers": len(image.get_layers()),
                "new_is_gray": new.is_gray(), "source_unchanged": pixels(source)[0] == before}
    finally:
        image.delete()


def case_guarded():
    """A server that wants a token and speaks TLS: the token from a file, TLS with the
    test's CA; two styles (a file and a layer) blended, style scale, smoothness, noise start."""
    image = load(P["photo"])
    try:
        source = image.get_layers()[0]
        style = copy_below(image, source, "style2")
        status, message = style_transfer(
            image, source, **{"style-file": Gio.File.new_for_path(P["style"]), "style2-layer": style,
                              "style2-weight": 0.3, "style-scale": 0.5, "smoothness": 1.0, "init": "noise",
                              "server": P["guarded"], "token-file": Gio.File.new_for_path(P["token_file"]),
                              "tls": True, "tls-ca-file": Gio.File.new_for_path(P["ca"]),
                              "preset": "draft", "max-size": 40, "live-preview": False})
        return {"status": status, "message": message, "layer_names": [l.get_name() for l in image.get_layers()]}
    finally:
        image.delete()


def case_guarded_wrong_token():
    return on_photo(**{"server": P["guarded"], "token": "wrong", "tls": True,
                       "tls-ca-file": Gio.File.new_for_path(P["ca"]), "preset": "draft", "max-size": 40})


def case_guarded_without_tls():
    return on_photo(**{"server": P["guarded"], "token-file": Gio.File.new_for_path(P["token_file"]),
                       "preset": "draft", "max-size": 40})


def case_long_job():
    """For the kill test: a job the host kills the plug-in in the middle of."""
    # 4 scales of 30 steps up to 256 px: several seconds even where bf16 is fast, so
    # the kill lands mid-job.
    return on_photo(**{"server": P["server"], "preset": "high", "max-size": 256, "live-preview": False})


def case_full_resolution():
    """A large RGBA photograph at full resolution (the server tiles its final scale)."""
    image = load(P["big_photo"])
    try:
        source = image.get_layers()[0]
        before, n = pixels(source)
        status, message = style_transfer(
            image, source, **{"style-file": Gio.File.new_for_path(P["style"]), "server": P["server"],
                              "preset": P["preset"], "full-resolution": True, "max-memory": P["max_memory"],
                              "style-scale": 0.25, "seed": 5, "live-preview": False})
        layers = image.get_layers()
        out = {"status": status, "message": message, "layers": len(layers), "channels": n,
               "source_unchanged": pixels(source)[0] == before}
        if len(layers) == 2:
            new = layers[0]
            after, _ = pixels(new)
            step = 25  # every 25th pixel's colour bytes; the alpha compared whole
            colour = [(before[c::n][::step], after[c::n][::step]) for c in range(n - 1)]
            out.update(new_size=[new.get_width(), new.get_height()],
                       alpha_unchanged=after[n - 1::n] == before[n - 1::n],
                       sampled=sum(len(a) for a, _ in colour),
                       changed=sum(x != y for a, b in colour for x, y in zip(a, b)),
                       mean_diff=sum(abs(x - y) for a, b in colour for x, y in zip(a, b)) / sum(len(a) for a, _ in colour))
        return out
    finally:
        image.delete()


def case_init_layer():
    """Start from another layer: an inverted copy of the photo, offset so that it
    covers the selected part of the source (that part is what is sent)."""
    image = load(P["photo"])
    try:
        source = image.get_layers()[0]
        start = copy_below(image, source, "earlier result")
        start.invert(False)
        start.set_offsets(-4, -2)
        image.select_rectangle(Gimp.ChannelOps.REPLACE, 10, 10, 40, 30)
        status, message = style_transfer(
            image, source, **{"style-file": Gio.File.new_for_path(P["style"]), "server": P["server"],
                              "preset": "draft", "max-size": 40, "init": "layer", "init-layer": start,
                              "live-preview": False})
        return {"status": status, "message": message, "layer_names": [l.get_name() for l in image.get_layers()]}
    finally:
        image.delete()


def _changed(before, after, n, w, h, columns):
    """How many pixels of `columns` (a range of x) differ in colour between two buffers."""
    count = 0
    for y in range(h):
        for x in columns:
            i = (y * w + x) * n
            if before[i:i + n - 1] != after[i:i + n - 1]:
                count += 1
    return count


def case_deep():
    """A 16-bit image: the layer travels at 16 bits and comes back as a 16-bit layer,
    alpha bit for bit."""
    image = load(P["photo"])
    try:
        image.convert_precision(Gimp.Precision.U16_NON_LINEAR)
        source = image.get_layers()[0]
        w, h = source.get_width(), source.get_height()
        rect = Gegl.Rectangle.new(0, 0, w, h)
        before = bytes(source.get_buffer().get(rect, 1.0, "R'G'B'A u16", Gegl.AbyssPolicy.CLAMP))
        status, message = style_transfer(
            image, source, **{"style-file": Gio.File.new_for_path(P["style"]), "server": P["server"],
                              "preset": "draft", "max-size": 48, "live-preview": False})
        out = {"status": status, "message": message, "precision": image.get_precision().value_name,
               "layers": len(image.get_layers())}
        if len(image.get_layers()) == 2:
            import struct

            after = bytes(image.get_layers()[0].get_buffer().get(rect, 1.0, "R'G'B'A u16", Gegl.AbyssPolicy.CLAMP))
            a, b = struct.unpack(f"<{w * h * 4}H", before), struct.unpack(f"<{w * h * 4}H", after)
            colour = [v for i, v in enumerate(b) if i % 4 != 3]
            out.update(alpha_unchanged=a[3::4] == b[3::4], changed=sum(x != y for x, y in zip(a, b)),
                       off_8_bit_grid=sum(v % 257 != 0 for v in colour) / len(colour),
                       levels=len(set(colour[0::3])))
        return out
    finally:
        image.delete()


def _region_run(where, prepare, **props):
    """The photo with a region made by `prepare(image, source)`, stylized with Style
    applies to `where`: which columns changed, left half and right half."""
    image = load(P["photo"])
    try:
        source = image.get_layers()[0]
        before, n = pixels(source)
        w, h = source.get_width(), source.get_height()
        prepare(image, source)
        status, message = style_transfer(
            image, source, **{"style-file": Gio.File.new_for_path(P["style"]), "server": P["server"],
                              "preset": "draft", "max-size": 64, "live-preview": False, "region": where, **props})
        out = {"status": status, "message": message, "layers": len(image.get_layers())}
        if len(image.get_layers()) >= 2:
            after, _ = pixels(image.get_layers()[0])
            out.update(left_changed=_changed(before, after, n, w, h, range(0, w // 2 - 4)),
                       right_changed=_changed(before, after, n, w, h, range(w // 2 + 4, w)),
                       size=[image.get_layers()[0].get_width(), image.get_layers()[0].get_height()])
        return out
    finally:
        image.delete()


def _left_half(image, source):
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 0, 0, source.get_width() // 2, source.get_height())


def case_region_selection():
    """The selection (the left half, feathered) is the style's region: the whole layer is
    sent, the right half keeps the layer's pixels."""
    def prepare(image, source):
        _left_half(image, source)
        Gimp.Selection.feather(image, 4.0)
    return _region_run("selection", prepare)


def case_region_layer_mask():
    """The layer's own mask (white on the left half) is the region; nothing is selected."""
    def prepare(image, source):
        _left_half(image, source)
        source.add_mask(source.create_mask(Gimp.AddMaskType.SELECTION))
        Gimp.Selection.none(image)
    return _region_run("layer-mask", prepare)


def case_region_two_styles():
    """The selection's region takes the first style, the second style the rest."""
    return _region_run("selection", _left_half, **{"style2-file": Gio.File.new_for_path(P["style"])})


def case_region_without_a_mask():
    return _region_run("layer-mask", lambda image, source: None)


RECORD = "style-transfer-record"


def case_again():
    """A result's record, and Again with Changes with no change: the same pixels."""
    image = load(P["photo"])
    try:
        source = image.get_layers()[0]
        status, message = style_transfer(image, source, **{
            "style-file": Gio.File.new_for_path(P["style"]), "server": P["server"], "preset": "draft",
            "max-size": 40, "seed": 5, "strength": 2.5, "live-preview": False})
        first = image.get_layers()[0]
        parasite = first.get_parasite(RECORD)
        out = {"status": status, "message": message, "first_name": first.get_name(),
               "flags": parasite.get_flags() if parasite else None,
               "record": json.loads(bytes(parasite.get_data()).decode()) if parasite else None}
        again, again_message = run_procedure("plug-in-style-transfer-again", image, first, server=P["server"])
        layers = image.get_layers()
        out.update(again=again, again_message=again_message, layer_names=[l.get_name() for l in layers])
        if len(layers) == 3:
            assert layers[1] == first and layers[0] != first
            out["same_pixels"] = pixels(layers[0])[0] == pixels(first)[0]
            out["source_under_both"] = layers[2].get_name() == source.get_name()
            second = layers[0].get_parasite(RECORD)
            out["same_record"] = second is not None and bytes(second.get_data()) == bytes(parasite.get_data())
        not_a_result, why = run_procedure("plug-in-style-transfer-again", image, source, server=P["server"])
        out.update(not_a_result=not_a_result, why=why)
        return out
    finally:
        image.delete()


def _variations(**props):
    image = load(P["photo"])
    try:
        source = image.get_layers()[0]
        status, message = style_transfer(image, source, **{
            "style-file": Gio.File.new_for_path(P["style"]), "server": P["server"], "preset": "draft",
            "max-size": 32, "seed": 7, "live-preview": True, **props})
        top = image.get_layers()
        out = {"status": status, "message": message, "top_names": [l.get_name() for l in top]}
        if len(top) == 2 and top[0].is_group():
            children = top[0].get_children()
            out["names"] = [c.get_name() for c in children]
            out["records"] = [json.loads(bytes(c.get_parasite(RECORD).get_data()).decode()) for c in children]
            out["distinct_pixels"] = len({pixels(c)[0] for c in children})
        return out
    finally:
        image.delete()


def case_variations_seeds():
    return _variations(variations=3, init="noise")


def case_variations_seeds_from_the_layer():
    return _variations(variations=3)


def case_variations_strength():
    return _variations(vary="strength", **{"vary-values": "0.5, 2"})


def case_variations_bad_values():
    return _variations(vary="style-scale", **{"vary-values": "1, big"})


def _server_settings(address):
    proc = pdb.lookup_procedure("plug-in-style-transfer-server")
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("server", address)
    status = proc.run(config).index(0)
    return status.value_nick, ("" if status == Gimp.PDBStatusType.SUCCESS else (pdb.get_last_error() or ""))


def case_server_settings():
    """Style Transfer Server... stores the address and tests it; a run that names no server
    uses it. A remote address that does not answer: saved, the test says why."""
    import os

    status, message = _server_settings(P["server"])
    out = {"status": status, "message": message}
    stored = os.path.join(Gimp.directory(), "style-transfer-server.json")
    out["stored"] = json.load(open(stored)) if os.path.exists(stored) else None
    out["run"] = on_photo(**{"server": "", "preset": "draft", "max-size": 40})
    out["down"] = _server_settings("192.0.2.1:9")
    out["stored_after_down"] = json.load(open(stored))["address"]
    return out


def case_animation():
    """Three frames as layers (the bottom one first): a new image with the stylized
    frames, names kept; this image unchanged."""
    image = load(P["photo"])
    try:
        base = image.get_layers()[0]
        w, h = base.get_width(), base.get_height()
        names = ["Frame 1 (100ms)", "Frame 2 (100ms)", "Frame 3 (100ms)"]
        base.set_name(names[0])
        for i, name in enumerate(names[1:], start=1):
            layer = Gimp.Layer.new_from_drawable(base, image)
            image.insert_layer(layer, None, 0)  # on top: later frames above
            layer.set_name(name)
            layer.transform_translate(2 * i, 0)  # a pan...
            layer.resize(w, h, 2 * i, 0)  # ...within the frame's own size and place
        before = {l.get_name(): pixels(l)[0] for l in image.get_layers()}
        known = set(i.get_id() for i in Gimp.get_images())
        status, message = style_transfer(image, image.get_layers()[0], **{
            "style-file": Gio.File.new_for_path(P["style"]), "server": P["server"], "preset": "draft",
            "max-size": 40, "animation": True})
        out = {"status": status, "message": message}
        made = [i for i in Gimp.get_images() if i.get_id() not in known]
        out["new_images"] = len(made)
        if made:
            layers = made[0].get_layers()
            out["names"] = [l.get_name() for l in layers]
            out["sizes"] = [[l.get_width(), l.get_height()] for l in layers]
            out["changed"] = [pixels(l)[0] != before[l.get_name()] for l in layers]
            out["frames_differ"] = len({pixels(l)[0] for l in layers})
            made[0].delete()
        out["source_unchanged"] = all(pixels(l)[0] == before[l.get_name()] for l in image.get_layers())
        return out
    finally:
        image.delete()


def case_init_without_layer():
    return on_photo(**{"server": P["server"], "preset": "draft", "max-size": 40, "init": "layer"})


for name in P["cases"]:
    try:
        report["cases"][name] = globals()["case_" + name]()
    except Exception:
        report["cases"][name] = {"error": traceback.format_exc()}
    with open(P["out"], "w") as f:
        json.dump(report, f, indent=1)
