"""stylecore: Gatys et al. 2016 neural style transfer on VGG19, in PyTorch.

No gRPC, no printing, no file I/O: callers hand in pixel buffers and a network,
and consume the events of `Engine.run`.

`stylecore.params` imports without torch (a client-only install has none); the
rest is imported on first use.
"""

from importlib import import_module

_EXPORTS = {
    "Engine": "engine", "Job": "engine", "Diverged": "engine", "ImageOptimizer": "optimize", "resolve_device": "engine", "resolve_dtype": "precision",
    "Cancelled": "events", "Event": "events", "Preview": "events", "Progress": "events",
    "Result": "events", "Started": "events", "TilePass": "events", "FrameStarted": "events", "FrameDone": "events",
    "stylize_frames": "sequence", "Temporal": "temporal",
    "PRESETS": "params", "ParamError": "params", "StyleParams": "params", "preset": "params",
    "VGGFeatures": "vgg", "random_state_dict": "vgg",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'stylecore' has no attribute {name!r}")
