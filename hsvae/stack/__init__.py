"""K runs of one task (a table cell's seeds) as one computation: see docs/ARCHITECTURE.md, "The stack"."""

from .members import MemberSplit, split_network
from .module import StackedData, StackedLoader, StackedTask
from .selection import MemberSelection, member_metrics_at

__all__ = ["MemberSelection", "MemberSplit", "StackedData", "StackedLoader", "StackedTask", "member_metrics_at",
           "split_network"]
