"""How messages leave the gateway: one module per wire protocol."""
