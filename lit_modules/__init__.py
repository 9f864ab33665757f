"""One LightningModule per training stage; each composes parts from `multimood`."""
