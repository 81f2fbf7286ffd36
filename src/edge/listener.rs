//! Listener control: the manager tells the host when to stop accepting
//! connections (the session count reached `max_sessions`) and when to start
//! again (it fell to 95 % of it). The host awaits these events; it never has
//! to wait for existing connections to close.

use crate::edge::watch::Watcher;

/// What the host's listeners should do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum ListenerState {
    /// Accept new connections.
    Accepting,
    /// At capacity: stop accepting until [`ListenerState::Accepting`].
    Paused,
    /// The manager shut down: close the listeners.
    Stopped,
}

/// A stream of listener states; see [`crate::SessionManager::listener_state`].
///
/// ```
/// # use indexer_sessions::ListenerState;
/// # async fn serve(mut events: indexer_sessions::ListenerEvents) {
/// loop {
///     match events.changed().await {
///         ListenerState::Accepting => { /* resume accept() */ }
///         ListenerState::Paused => { /* stop calling accept() */ }
///         ListenerState::Stopped => break,
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ListenerEvents {
    pub(crate) watcher: Watcher<ListenerState>,
}

impl ListenerEvents {
    /// The state now.
    pub fn current(&self) -> ListenerState {
        self.watcher.current()
    }

    /// Waits for the next change and returns the new state.
    ///
    /// # Cancel safety
    /// Cancel-safe: a change a dropped future did not return is still the
    /// state [`ListenerEvents::current`] reports.
    pub async fn changed(&mut self) -> ListenerState {
        self.watcher.changed().await
    }

    /// Waits until the state is `Accepting` (at once if it is) or `Stopped`;
    /// returns which.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads the state.
    pub async fn accepting(&mut self) -> ListenerState {
        self.watcher
            .wait_for(|state| *state != ListenerState::Paused)
            .await
    }
}

impl futures::Stream for ListenerEvents {
    type Item = ListenerState;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ListenerState>> {
        self.watcher.poll_changed(cx).map(Some)
    }
}
