"""Model architectures (plain nn.Modules; training lives in ser.training)."""
