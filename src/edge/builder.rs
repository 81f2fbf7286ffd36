//! Assembling a [`SessionManager`]: [`HostParts`], the [`Host`] the
//! builder makes of the parts it is given, and the builder itself, whose
//! type tracks which required parts it has so that `build` only exists once
//! it has them all.

use crate::config::Config;
use crate::core::groups::InProcessLedger;
use crate::core::tx::StructuralValidator;
use crate::edge::dyn_host::{DynDaemon, DynDb, DynLedger, DynMempool, DynTimer, DynValidator};
use crate::edge::manager::SessionManager;
use crate::error::ConfigError;
use crate::host::{Daemon, Db, Host, Mempool, TxValidator};
use crate::ledger::GroupLedger;
use crate::timer::Timer;
use std::sync::Arc;

/// A [`Host`] made of its six parts, as the builder assembles it. The last
/// two have defaults, so a manager's type is written with four:
/// `SessionManager<HostParts<MyDb, MyDaemon, MyMempool, TokioTimer>>`.
#[derive(Clone, Debug, Default)]
pub struct HostParts<D, N, M, T, V = StructuralValidator, L = InProcessLedger> {
    /// The index.
    pub db: D,
    /// The node.
    pub daemon: N,
    /// The mempool.
    pub mempool: M,
    /// The clock and sleeps.
    pub timer: T,
    /// The check a transaction passes before the node sees it.
    pub validator: V,
    /// Where group costs and membership are kept.
    pub ledger: L,
}

impl<D: Db, N: Daemon, M: Mempool, T: Timer, V: TxValidator, L: GroupLedger> Host
    for HostParts<D, N, M, T, V, L>
{
    type Db = D;
    type Daemon = N;
    type Mempool = M;
    type Timer = T;
    type Validator = V;
    type Ledger = L;

    fn db(&self) -> &D {
        &self.db
    }
    fn daemon(&self) -> &N {
        &self.daemon
    }
    fn mempool(&self) -> &M {
        &self.mempool
    }
    fn timer(&self) -> &T {
        &self.timer
    }
    fn validator(&self) -> &V {
        &self.validator
    }
    fn ledger(&self) -> &L {
        &self.ledger
    }
}

/// Every part behind an `Arc<dyn …>` (in a named wrapper, see
/// [`crate::DynDb`]): for hosts that choose their parts at run time, or
/// want one manager type whatever the parts
/// ([`SessionManagerBuilder::build_dyn`]). Every future of a manager over
/// it can be spawned on a multi-threaded runtime.
pub type DynHost = HostParts<DynDb, DynDaemon, DynMempool, DynTimer, DynValidator, DynLedger>;

/// A manager over trait objects ([`DynHost`]), named in one word.
pub type DynSessionManager = SessionManager<DynHost>;

/// In a [`SessionManagerBuilder`]'s type: no index given yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDb;
/// In a [`SessionManagerBuilder`]'s type: no node given yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDaemon;
/// In a [`SessionManagerBuilder`]'s type: no mempool given yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMempool;
/// In a [`SessionManagerBuilder`]'s type: no timer given yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTimer;

/// Builds a [`SessionManager`]; see [`SessionManager::builder`].
///
/// Its type parameters are the parts given so far. `build` exists only
/// once it has a timer, a db, a daemon and a mempool, so a forgotten part
/// is a compile error, not a run-time one:
///
/// ```compile_fail,E0599
/// # #[cfg(feature = "test-util")] {
/// use indexer_sessions::testing::{MemoryDaemon, MemoryDb, MemoryMempool};
/// use indexer_sessions::{Config, SessionManager};
/// // No timer: there is no `build` on this builder.
/// let manager = SessionManager::builder(Config::default())
///     .db(MemoryDb::new())
///     .daemon(MemoryDaemon::new())
///     .mempool(MemoryMempool::new())
///     .build();
/// # }
/// # #[cfg(not(feature = "test-util"))] compile_error!("needs test-util");
/// ```
#[must_use = "a builder does nothing until `build` is called"]
#[derive(Debug)]
pub struct SessionManagerBuilder<
    D = NoDb,
    N = NoDaemon,
    M = NoMempool,
    T = NoTimer,
    V = StructuralValidator,
    L = InProcessLedger,
> {
    config: Config,
    parts: HostParts<D, N, M, T, V, L>,
}

impl SessionManagerBuilder {
    pub(crate) fn new(config: Config) -> Self {
        assemble(
            config,
            NoDb,
            NoDaemon,
            NoMempool,
            NoTimer,
            StructuralValidator,
            InProcessLedger::new(),
        )
    }
}

impl<D, N, M, T, V, L> SessionManagerBuilder<D, N, M, T, V, L> {
    /// The clock and sleeps to use (required): `TokioTimer` with the `tokio`
    /// feature, `testing::ManualTimer` with `test-util`, or your own [`Timer`].
    pub fn timer<T2: Timer>(self, timer: T2) -> SessionManagerBuilder<D, N, M, T2, V, L> {
        let p = self.parts;
        assemble(
            self.config,
            p.db,
            p.daemon,
            p.mempool,
            timer,
            p.validator,
            p.ledger,
        )
    }

    /// The index (required).
    pub fn db<D2: Db>(self, db: D2) -> SessionManagerBuilder<D2, N, M, T, V, L> {
        let p = self.parts;
        assemble(
            self.config,
            db,
            p.daemon,
            p.mempool,
            p.timer,
            p.validator,
            p.ledger,
        )
    }

    /// The node (required).
    pub fn daemon<N2: Daemon>(self, daemon: N2) -> SessionManagerBuilder<D, N2, M, T, V, L> {
        let p = self.parts;
        assemble(
            self.config,
            p.db,
            daemon,
            p.mempool,
            p.timer,
            p.validator,
            p.ledger,
        )
    }

    /// The mempool (required).
    pub fn mempool<M2: Mempool>(self, mempool: M2) -> SessionManagerBuilder<D, N, M2, T, V, L> {
        let p = self.parts;
        assemble(
            self.config,
            p.db,
            p.daemon,
            mempool,
            p.timer,
            p.validator,
            p.ledger,
        )
    }

    /// The check a transaction passes before it reaches the daemon; default
    /// [`StructuralValidator`].
    pub fn validator<V2: TxValidator>(self, validator: V2) -> SessionManagerBuilder<D, N, M, T, V2, L> {
        let p = self.parts;
        assemble(
            self.config,
            p.db,
            p.daemon,
            p.mempool,
            p.timer,
            validator,
            p.ledger,
        )
    }

    /// The group ledger; default [`InProcessLedger`].
    pub fn ledger<L2: GroupLedger>(self, ledger: L2) -> SessionManagerBuilder<D, N, M, T, V, L2> {
        let p = self.parts;
        assemble(
            self.config,
            p.db,
            p.daemon,
            p.mempool,
            p.timer,
            p.validator,
            ledger,
        )
    }
}

/// A builder of these parts (each setter replaces one).
fn assemble<D, N, M, T, V, L>(
    config: Config,
    db: D,
    daemon: N,
    mempool: M,
    timer: T,
    validator: V,
    ledger: L,
) -> SessionManagerBuilder<D, N, M, T, V, L> {
    SessionManagerBuilder {
        config,
        parts: HostParts {
            db,
            daemon,
            mempool,
            timer,
            validator,
            ledger,
        },
    }
}

impl<D: Db, N: Daemon, M: Mempool, T: Timer, V: TxValidator, L: GroupLedger>
    SessionManagerBuilder<D, N, M, T, V, L>
{
    /// Builds the manager, generic over the parts given (static dispatch).
    ///
    /// # Errors
    /// [`ConfigError`] for an out-of-range setting.
    #[allow(clippy::type_complexity)] // the parts are the type, by design
    pub fn build(self) -> Result<SessionManager<HostParts<D, N, M, T, V, L>>, ConfigError> {
        SessionManager::new(self.config, self.parts)
    }

    /// Builds a [`DynSessionManager`]: every part behind an `Arc<dyn …>`,
    /// so the manager's type does not name them.
    ///
    /// # Errors
    /// [`ConfigError`] for an out-of-range setting.
    pub fn build_dyn(self) -> Result<DynSessionManager, ConfigError> {
        let HostParts {
            db,
            daemon,
            mempool,
            timer,
            validator,
            ledger,
        } = self.parts;
        let parts: DynHost = HostParts {
            db: DynDb(Arc::new(db)),
            daemon: DynDaemon(Arc::new(daemon)),
            mempool: DynMempool(Arc::new(mempool)),
            timer: DynTimer(Arc::new(timer)),
            validator: DynValidator(Arc::new(validator)),
            ledger: DynLedger(Arc::new(ledger)),
        };
        SessionManager::new(self.config, parts)
    }
}
