"""Ray wiring: the Serve deployment of the model, stream actors, and the supervisor that owns them."""

from .ray_env import set_defaults

set_defaults()  # before any actor module imports ray: Ray reads its listen address at import
