"""siamese-ad: two-stage contrastive Siamese teacher-student U-Net for anomaly detection."""

__version__ = "0.1.0"
