"""Write the JSON Schema file of every message model: `python -m schemas.export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.models import MESSAGE_MODELS

HERE = Path(__file__).resolve().parent


def schema_of(name: str) -> dict[str, Any]:
    schema = MESSAGE_MODELS[name].model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://ecoute.dev/schemas/{name}.json"
    return schema


def rendered(name: str) -> str:
    return json.dumps(schema_of(name), indent=2, sort_keys=True) + "\n"


def main() -> None:
    for name in MESSAGE_MODELS:
        (HERE / f"{name}.json").write_text(rendered(name))


if __name__ == "__main__":
    main()
