from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_RAW: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_WEBP: _ClassVar[ImageFormat]
    IMAGE_FORMAT_TIFF: _ClassVar[ImageFormat]
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_RAW: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
IMAGE_FORMAT_WEBP: ImageFormat
IMAGE_FORMAT_TIFF: ImageFormat

class StylizeRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: Header
    chunk: ImageChunk
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., chunk: _Optional[_Union[ImageChunk, _Mapping]] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("preset", "params", "preview_every", "preview_max_side", "result_format", "content", "styles", "init_image", "style_masks", "style_source_masks", "result_depth", "previous_frame", "previous_result")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STYLES_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    STYLE_MASKS_FIELD_NUMBER: _ClassVar[int]
    STYLE_SOURCE_MASKS_FIELD_NUMBER: _ClassVar[int]
    RESULT_DEPTH_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FRAME_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_RESULT_FIELD_NUMBER: _ClassVar[int]
    preset: str
    params: Params
    preview_every: int
    preview_max_side: int
    result_format: ImageFormat
    content: ImageMeta
    styles: _containers.RepeatedCompositeFieldContainer[ImageMeta]
    init_image: ImageMeta
    style_masks: _containers.RepeatedCompositeFieldContainer[ImageMeta]
    style_source_masks: _containers.RepeatedCompositeFieldContainer[ImageMeta]
    result_depth: int
    previous_frame: ImageMeta
    previous_result: ImageMeta
    def __init__(self, preset: _Optional[str] = ..., params: _Optional[_Union[Params, _Mapping]] = ..., preview_every: _Optional[int] = ..., preview_max_side: _Optional[int] = ..., result_format: _Optional[_Union[ImageFormat, str]] = ..., content: _Optional[_Union[ImageMeta, _Mapping]] = ..., styles: _Optional[_Iterable[_Union[ImageMeta, _Mapping]]] = ..., init_image: _Optional[_Union[ImageMeta, _Mapping]] = ..., style_masks: _Optional[_Iterable[_Union[ImageMeta, _Mapping]]] = ..., style_source_masks: _Optional[_Iterable[_Union[ImageMeta, _Mapping]]] = ..., result_depth: _Optional[int] = ..., previous_frame: _Optional[_Union[ImageMeta, _Mapping]] = ..., previous_result: _Optional[_Union[ImageMeta, _Mapping]] = ...) -> None: ...

class Params(_message.Message):
    __slots__ = ("size", "resize", "scales", "min_scale", "steps", "coarse_steps", "optimizer", "lr", "average", "init", "clamp", "content_weight", "style_weight", "tv_weight", "style_layer_weights", "style_blend", "style_scale", "pooling", "preserve_colors", "seed", "precision", "max_memory", "tile", "tileable", "temporal_weight")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    MIN_SCALE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    COARSE_STEPS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    CLAMP_FIELD_NUMBER: _ClassVar[int]
    CONTENT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STYLE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TV_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STYLE_LAYER_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    STYLE_BLEND_FIELD_NUMBER: _ClassVar[int]
    STYLE_SCALE_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_COLORS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    TILEABLE_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    size: int
    resize: str
    scales: int
    min_scale: int
    steps: int
    coarse_steps: int
    optimizer: str
    lr: float
    average: float
    init: str
    clamp: int
    content_weight: float
    style_weight: float
    tv_weight: float
    style_layer_weights: _containers.RepeatedScalarFieldContainer[float]
    style_blend: _containers.RepeatedScalarFieldContainer[float]
    style_scale: float
    pooling: str
    preserve_colors: str
    seed: int
    precision: str
    max_memory: float
    tile: int
    tileable: int
    temporal_weight: float
    def __init__(self, size: _Optional[int] = ..., resize: _Optional[str] = ..., scales: _Optional[int] = ..., min_scale: _Optional[int] = ..., steps: _Optional[int] = ..., coarse_steps: _Optional[int] = ..., optimizer: _Optional[str] = ..., lr: _Optional[float] = ..., average: _Optional[float] = ..., init: _Optional[str] = ..., clamp: _Optional[int] = ..., content_weight: _Optional[float] = ..., style_weight: _Optional[float] = ..., tv_weight: _Optional[float] = ..., style_layer_weights: _Optional[_Iterable[float]] = ..., style_blend: _Optional[_Iterable[float]] = ..., style_scale: _Optional[float] = ..., pooling: _Optional[str] = ..., preserve_colors: _Optional[str] = ..., seed: _Optional[int] = ..., precision: _Optional[str] = ..., max_memory: _Optional[float] = ..., tile: _Optional[int] = ..., tileable: _Optional[int] = ..., temporal_weight: _Optional[float] = ...) -> None: ...

class ImageMeta(_message.Message):
    __slots__ = ("format", "width", "height", "channels", "size_bytes", "depth")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    format: ImageFormat
    width: int
    height: int
    channels: int
    size_bytes: int
    depth: int
    def __init__(self, format: _Optional[_Union[ImageFormat, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., size_bytes: _Optional[int] = ..., depth: _Optional[int] = ...) -> None: ...

class ImageChunk(_message.Message):
    __slots__ = ("image", "offset", "data")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    image: int
    offset: int
    data: bytes
    def __init__(self, image: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class StylizeEvent(_message.Message):
    __slots__ = ("queued", "started", "progress", "preview", "result", "done", "tile")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    queued: Queued
    started: Started
    progress: Progress
    preview: Preview
    result: ResultChunk
    done: Done
    tile: TileProgress
    def __init__(self, queued: _Optional[_Union[Queued, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ..., result: _Optional[_Union[ResultChunk, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., tile: _Optional[_Union[TileProgress, _Mapping]] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class Size(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("job_id", "device", "dtype", "model", "model_verified", "scales", "total_steps", "tiles")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    TILES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    device: str
    dtype: str
    model: str
    model_verified: bool
    scales: _containers.RepeatedCompositeFieldContainer[Size]
    total_steps: int
    tiles: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, job_id: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., model: _Optional[str] = ..., model_verified: _Optional[bool] = ..., scales: _Optional[_Iterable[_Union[Size, _Mapping]]] = ..., total_steps: _Optional[int] = ..., tiles: _Optional[_Iterable[int]] = ...) -> None: ...

class TileProgress(_message.Message):
    __slots__ = ("scale", "step", "phase", "phases", "tile", "tiles")
    SCALE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    TILES_FIELD_NUMBER: _ClassVar[int]
    scale: int
    step: int
    phase: int
    phases: int
    tile: int
    tiles: int
    def __init__(self, scale: _Optional[int] = ..., step: _Optional[int] = ..., phase: _Optional[int] = ..., phases: _Optional[int] = ..., tile: _Optional[int] = ..., tiles: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("scale", "scales", "step", "steps", "losses", "elapsed", "eta", "best")
    class LossesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SCALE_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    scale: int
    scales: int
    step: int
    steps: int
    losses: _containers.ScalarMap[str, float]
    elapsed: float
    eta: float
    best: float
    def __init__(self, scale: _Optional[int] = ..., scales: _Optional[int] = ..., step: _Optional[int] = ..., steps: _Optional[int] = ..., losses: _Optional[_Mapping[str, float]] = ..., elapsed: _Optional[float] = ..., eta: _Optional[float] = ..., best: _Optional[float] = ...) -> None: ...

class Preview(_message.Message):
    __slots__ = ("scale", "step", "png")
    SCALE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    scale: int
    step: int
    png: bytes
    def __init__(self, scale: _Optional[int] = ..., step: _Optional[int] = ..., png: _Optional[bytes] = ...) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("meta", "offset", "data")
    META_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    meta: ImageMeta
    offset: int
    data: bytes
    def __init__(self, meta: _Optional[_Union[ImageMeta, _Mapping]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("elapsed", "losses")
    class LossesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    elapsed: float
    losses: _containers.ScalarMap[str, float]
    def __init__(self, elapsed: _Optional[float] = ..., losses: _Optional[_Mapping[str, float]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Info(_message.Message):
    __slots__ = ("server_version", "device", "dtype", "model", "model_sha256", "model_verified", "limits", "presets", "contract_version", "devices")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    device: str
    dtype: str
    model: str
    model_sha256: str
    model_verified: bool
    limits: Limits
    presets: _containers.RepeatedCompositeFieldContainer[Preset]
    contract_version: str
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, server_version: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., model: _Optional[str] = ..., model_sha256: _Optional[str] = ..., model_verified: _Optional[bool] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., presets: _Optional[_Iterable[_Union[Preset, _Mapping]]] = ..., contract_version: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("name", "state", "threads", "jobs", "busy_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    BUSY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    threads: int
    jobs: int
    busy_seconds: float
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., threads: _Optional[int] = ..., jobs: _Optional[int] = ..., busy_seconds: _Optional[float] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_pixels", "max_message_bytes", "chunk_bytes", "max_queue", "max_request_bytes", "max_styles", "upload_seconds", "min_upload_bytes_per_second", "max_work_pixels", "max_job_bytes", "max_calls")
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STYLES_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_UPLOAD_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MAX_WORK_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_JOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_FIELD_NUMBER: _ClassVar[int]
    max_pixels: int
    max_message_bytes: int
    chunk_bytes: int
    max_queue: int
    max_request_bytes: int
    max_styles: int
    upload_seconds: float
    min_upload_bytes_per_second: int
    max_work_pixels: int
    max_job_bytes: int
    max_calls: int
    def __init__(self, max_pixels: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., max_queue: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_styles: _Optional[int] = ..., upload_seconds: _Optional[float] = ..., min_upload_bytes_per_second: _Optional[int] = ..., max_work_pixels: _Optional[int] = ..., max_job_bytes: _Optional[int] = ..., max_calls: _Optional[int] = ...) -> None: ...

class Preset(_message.Message):
    __slots__ = ("name", "params")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: Params
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[Params, _Mapping]] = ...) -> None: ...
