//! The tip as the manager last recorded it, and the shared
//! `blockchain.headers.subscribe` result for it.

use crate::core::outbox::TipGeneration;
use crate::types::{BlockHash, Height, Tip};

/// The last tip given to `notify`, and how many tip changes have been
/// recorded (0 before the first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RecordedTip {
    pub(crate) tip: Option<Tip>,
    pub(crate) generation: TipGeneration,
}

impl RecordedTip {
    /// Records `tip`; returns the tip it replaces (`Some(None)` for the
    /// first), or `None` if `tip` is the one recorded.
    pub(crate) fn record(&mut self, tip: Tip) -> Option<Option<Tip>> {
        if self.tip == Some(tip) {
            return None;
        }
        self.generation += 1;
        Some(self.tip.replace(tip))
    }
}

/// The header of a tip, read once per tip and shared by every
/// `blockchain.headers.subscribe` reply and header notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TipHeader {
    pub(crate) tip: Tip,
    /// The generation the tip was recorded at (0: read from the `Db`
    /// before any tip was recorded).
    pub(crate) generation: TipGeneration,
    pub(crate) header: Vec<u8>,
    /// The hash of `header` itself: the `Db` may already have moved past
    /// `tip` when it was read, so this, not `tip.hash`, says which block a
    /// client was told of.
    pub(crate) hash: BlockHash,
}

impl TipHeader {
    pub(crate) fn height(&self) -> Height {
        self.tip.height
    }
}
