"""ostree: importing ostree-native containers, encapsulating commits, deployment helpers."""
