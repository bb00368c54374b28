"""The wire protocol: one immutable message type, its serializers, compressors and signing."""
