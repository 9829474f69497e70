//! Chaos scenarios, fault injection and invariant checks (`mishards chaos`). Built by the chaos issue.
