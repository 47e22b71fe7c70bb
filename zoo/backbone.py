"""`Backbone`: the Keras base of every family's backbone, with its config derived from the family's dataclass.

A subclass sets `config_class` (a `zoo.config.FamilyConfig`), stores each constructor argument as an attribute of
the same name, creates its layers in `__init__` and builds every weight in `build_weights()` (all shapes follow
from the constructor arguments). `get_config`, `from_config`, `build`, `build_from_config` and `config` are
written here once.
"""

import keras


class Backbone(keras.Model):
    """Base class; see the module docstring. Subclasses are registered Keras serializables."""

    config_class = None  # the family's FamilyConfig subclass

    def build_from_config(self, config):
        # Every weight shape follows from the constructor arguments, so no input shape is needed.
        self.build()

    def build(self, input_shape=None):
        if self.built:  # deserialisation may have built us already as a nested model
            return
        self.build_weights()
        self.built = True

    def build_weights(self):
        """Builds every sublayer; shapes come from the constructor arguments."""
        raise NotImplementedError

    @property
    def config(self):
        """The architecture as the family's dataclass."""
        return self.config_class(**{name: getattr(self, name) for name in self.config_class.field_names()})

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
