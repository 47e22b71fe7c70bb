"""`FamilyConfig`: the dataclass base of every family's architecture config (its fields are the backbone's
constructor arguments), and the preset lookup every family shares."""

import dataclasses
import json


@dataclasses.dataclass
class FamilyConfig:
    """Base of `BertConfig`, `GPTConfig`, ...: JSON round trips and checked construction from a dict.

    Subclasses are plain dataclasses; their fields are exactly their backbone's constructor arguments, so
    `Backbone(**config.to_dict())` builds the model and `Backbone.get_config()` gives the fields back.
    """

    def replace(self, **changes):
        """A copy with `changes`; ValueError naming unknown keys."""
        self._check_keys(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self, path):
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def field_names(cls):
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def _check_keys(cls, values):
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} keys {unknown}; expected some of {sorted(cls.field_names())}.")

    @classmethod
    def from_dict(cls, values):
        cls._check_keys(values)
        return cls(**values)

    @classmethod
    def from_json(cls, path):
        with open(path) as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise ValueError(f"{path} holds a JSON {type(values).__name__}; expected an object of {cls.__name__} fields.")
        return cls.from_dict(values)


def get_preset(presets, name, what="model"):
    """A copy of `presets[name]`, or ValueError listing the known presets of `what`."""
    if name not in presets:
        raise ValueError(f"Unknown {what} preset {name!r}; choose one of {', '.join(presets)}.")
    return dataclasses.replace(presets[name])
