"""LightningModules and the train(cfg) entry point."""
