"""Ray wiring: the Serve deployment of the model, stream actors, and the supervisor that owns them."""
