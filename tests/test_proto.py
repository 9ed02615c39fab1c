"""The contract: generated code up to date, and the Params message mirroring the
engine's parameters dataclass field for field."""

from __future__ import annotations

import dataclasses

from stylecore.params import PRESETS, StyleParams
from styleserver import convert, protogen
from styletransfer.v1 import style_transfer_pb2 as pb


def test_generated_code_is_up_to_date(tmp_path):
    committed = protogen.PROTO_ROOT  # proto/, where the committed files live
    for fresh in protogen.generate(tmp_path):
        old = committed / fresh.relative_to(tmp_path)
        assert old.read_bytes() == fresh.read_bytes(), f"{old} is stale: run python -m styleserver.protogen"


def test_params_message_mirrors_the_dataclass():
    proto_fields = [f.name for f in pb.Params.DESCRIPTOR.fields]
    assert proto_fields == [f.name for f in dataclasses.fields(StyleParams)]


def test_params_round_trip_for_every_preset():
    for name, params in PRESETS.items():
        assert convert.params_from_proto(name, convert.params_to_proto(params)) == params
        changed = params.replace(steps=7, style_blend=(1.0, 2.0), preserve_colors="match")
        message = convert.params_to_proto(changed, base=params)
        assert {f.name for f, _ in message.ListFields()} == {"steps", "style_blend", "preserve_colors"}
        assert convert.params_from_proto(name, message) == changed
