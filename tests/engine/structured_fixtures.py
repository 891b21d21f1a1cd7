"""A nested JSON schema, tools, and tiny GLM engines (GLM-4 and ChatGLM3 tokenizers) for the
constrained-decoding and tool-format tests."""

from __future__ import annotations

import json

from tests.engine.glm_fixtures import (
    chatglm_config,
    save_chatglm_folder,
    save_glm_folder,
    tiny_glm_config,
    tiny_glm_model,
)

# objects in an array in an object, an enum, numbers, a boolean: short keys keep the tests quick
SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["filter", "pump", "valve"]},
        "price": {"type": "number"},
        "parts": {"type": "array", "items": {
            "type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
        "ok": {"type": "boolean"},
    },
    "required": ["kind", "price", "parts", "ok"],
}

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}


def validate(text: str, schema: dict) -> dict:
    import jsonschema

    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


def tiny_glm_engines(tmp_path_factory) -> dict:
    """{"glm4": engine with GLM-4's format, "chatglm3": engine with ChatGLM3's}, random tiny weights."""
    from ragglm.engine import Engine

    config = tiny_glm_config(max_position_embeddings=2048)  # room for the tool prompts
    glm4 = Engine.from_pretrained(save_glm_folder(tiny_glm_model(config), tmp_path_factory.mktemp("glm4")), dtype="fp32")
    state = {k: v.clone() for k, v in glm4.model.state_dict().items()}
    chatglm3 = Engine.from_pretrained(save_chatglm_folder(state, chatglm_config(config), tmp_path_factory.mktemp("cg3")),
                                      dtype="fp32")
    return {"glm4": glm4, "chatglm3": chatglm3}
