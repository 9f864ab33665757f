"""One LightningDataModule per dataset (MESC, DFEW)."""
