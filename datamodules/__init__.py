"""One LightningDataModule per dataset (MESC, DFEW), importable as ``datamodules.<Name>``."""

from datamodules.common import MediaIssueMonitor
from datamodules.dfew import DFEWDataModule
from datamodules.mesc import MESCDataModule
from datamodules.mesc_history import MESCHistoryDataModule

__all__ = ["DFEWDataModule", "MESCDataModule", "MESCHistoryDataModule", "MediaIssueMonitor"]
