//! Password hashing and checking, bounded by design: every Argon2id hash or verification of
//! the process goes through one [`PasswordGate`], which runs at most
//! [`PasswordGate::default_concurrency`] of them at once (half the cores), each on a memory
//! buffer kept for the purpose, and refuses anything over that bound at once
//! ([`ServiceError::Busy`]) instead of queueing it.
//!
//! Why a gate and not a queue: one Argon2id computation needs [`M_COST_KIB`] KiB and a core
//! for tens of milliseconds. Unbounded (one blocking thread per request, up to 512) a flood of
//! logins took one server from 12 MB to 3.8 GB; queued, it would still hold every waiting
//! request and delay every honest login behind the flood. Refused at once, a flood costs a few
//! microseconds per request, and the client is told to come back (`429`, `Retry-After`).
//!
//! Why threads of its own, each with one buffer: `Argon2::hash_password_into` allocates its
//! 19 MiB per call, and glibc keeps freed chunks in per-thread arenas, so RSS grew with every
//! blocking thread that ever hashed; here the memory the gate can ever hold is
//! `concurrency × M_COST_KIB` KiB, whatever the load. And the threads run at a low priority
//! (about nice 10): on an idle machine a hash takes what it always takes, but while requests
//! wait for the CPU — a flood of logins, say — the hashing yields to them, its permits stay
//! taken longer, and more of the flood is refused at once instead of being computed.
//!
//! Parameters (OWASP Password Storage Cheat Sheet, Argon2id): m = 19 MiB, t = 2, p = 1 — the
//! first of its equivalent configurations, and what every stored hash already uses (PHC strings
//! carry their parameters, so a hash made with others still verifies). The lower-memory rows
//! (e.g. m = 7 MiB, t = 5) cost an attacker the same per guess but trade memory hardness, the
//! part that hurts GPU attackers, for CPU time we would pay on every login; with the bound,
//! memory is `cores / 2 × 19 MiB` at most (19 MiB on 2 cores), so there is little to win. And
//! changing them would make a login for a user whose hash still has the old parameters cost
//! more than one for an unknown user (a timing oracle on who exists) until every user logged
//! in again.
//!
//! Reason to change: the password-hashing policy (parameters, bound). Must never depend on
//! HTTP, the database, or who calls it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::error::{ServiceError, ServiceResult};

/// Argon2id memory cost in KiB (19 MiB, OWASP).
pub const M_COST_KIB: u32 = 19 * 1024;
/// Argon2id passes (OWASP, with [`M_COST_KIB`]).
pub const T_COST: u32 = 2;
/// Argon2id lanes (OWASP).
pub const P_COST: u32 = 1;
/// Bytes of hash output.
const OUTPUT_LEN: usize = 32;
/// The largest memory cost a stored hash may ask for (256 MiB); a larger one is refused as
/// corrupt rather than allocated.
const MAX_M_COST_KIB: u32 = 256 * 1024;

/// The parameters new hashes are made with.
pub fn params() -> Params {
    // Constant, valid inputs: `new` only fails on out-of-range values.
    Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN)).unwrap_or(Params::DEFAULT)
}

/// What the gate counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct PasswordMetrics {
    /// Hashes and verifications computed.
    pub computed: AtomicU64,
    /// Requests refused because the bound was reached.
    pub refused: AtomicU64,
}

/// The one bound on password work (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct PasswordGate {
    inner: Arc<Inner>,
}

struct Inner {
    permits: Arc<Semaphore>,
    concurrency: usize,
    /// Work for the gate's threads; never more queued than permits taken.
    jobs: SyncSender<Job>,
    metrics: Arc<PasswordMetrics>,
}

/// One computation, with its permit and where its answer goes.
type Job = Box<dyn FnOnce(&mut Hasher<'_>) + Send>;

/// How much the gate's threads yield to everything else when the CPU is contended: about
/// nice 10 (a CFS weight of ~110 against 1024), i.e. a tenth of a core's share. An idle
/// machine still hashes at full speed.
const THREAD_PRIORITY: u8 = 25;

impl std::fmt::Debug for PasswordGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordGate").field("concurrency", &self.inner.concurrency).finish_non_exhaustive()
    }
}

impl Default for PasswordGate {
    fn default() -> Self {
        Self::new(Self::default_concurrency())
    }
}

impl PasswordGate {
    /// A gate running at most `concurrency` (at least 1) computations at once, on as many
    /// threads of its own (they end when the gate is dropped).
    pub fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(concurrency);
        let queue = Arc::new(Mutex::new(queue));
        let metrics = Arc::new(PasswordMetrics::default());
        let dummy: Arc<str> = dummy_hash().into();
        for i in 0..concurrency {
            let (queue, metrics, dummy) = (queue.clone(), metrics.clone(), dummy.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("pulse-passwords-{i}"))
                .spawn(move || hashing_thread(&queue, &metrics, &dummy));
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password-hashing thread");
            }
        }
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(concurrency)),
                concurrency,
                jobs,
                metrics,
            }),
        }
    }

    /// How many computations run at once by default: half the machine's cores
    /// (`std::thread::available_parallelism`), at least one. Not all of them: a flood keeps
    /// every permit busy, and with one per core it kept every core hashing — the other
    /// requests then waited on the CPU (measured: the flood took twice as long to refuse and
    /// a logged-in client's p99 doubled, see `docs/reliability.md`).
    pub fn default_concurrency() -> usize {
        (std::thread::available_parallelism().map_or(1, std::num::NonZero::get) / 2).max(1)
    }

    /// A gate as wide as the default ([`PasswordGate::default_concurrency`]).
    pub fn sized_to_cores() -> Self {
        Self::default()
    }

    /// How many computations may run at once.
    pub fn concurrency(&self) -> usize {
        self.inner.concurrency
    }

    /// Counters.
    pub fn metrics(&self) -> &PasswordMetrics {
        &self.inner.metrics
    }

    /// One of the gate's permits, or [`ServiceError::Busy`] at once when every permit is
    /// taken. Never waits. Take it *before* anything else the request would cost (a database
    /// read), so that what is refused costs nothing.
    pub fn try_permit(&self) -> ServiceResult<PasswordPermit> {
        match self.inner.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(PasswordPermit { inner: self.inner.clone(), _permit: permit }),
            Err(_) => {
                self.inner.metrics.refused.fetch_add(1, Ordering::Relaxed);
                Err(ServiceError::Busy)
            }
        }
    }

    /// [`PasswordGate::try_permit`], then [`PasswordPermit::run`].
    pub async fn run<T, F>(&self, work: F) -> ServiceResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Hasher<'_>) -> T + Send + 'static,
    {
        self.try_permit()?.run(work).await
    }

    /// Hashes a new password (random salt, PHC string with the parameters).
    pub async fn hash(&self, password: String) -> ServiceResult<String> {
        self.run(move |h| h.hash(&password)).await?
    }

    /// Checks `password` against `hash`, or, for `None` (no such user), against a hash no
    /// password matches, at the same cost.
    pub async fn verify(&self, password: String, hash: Option<String>) -> ServiceResult<bool> {
        self.run(move |h| h.verify(&password, hash.as_deref())).await
    }
}

/// A place in the gate: at most [`PasswordGate::concurrency`] exist at once.
pub struct PasswordPermit {
    inner: Arc<Inner>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::fmt::Debug for PasswordPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordPermit").finish_non_exhaustive()
    }
}

impl PasswordPermit {
    /// Runs `work` with a [`Hasher`] on one of the gate's threads (and its buffer); the
    /// permit is released when the work is done (not when the caller stops waiting).
    pub async fn run<T, F>(self, work: F) -> ServiceResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Hasher<'_>) -> T + Send + 'static,
    {
        let (answer, result) = tokio::sync::oneshot::channel();
        let jobs = self.inner.jobs.clone();
        let job: Job = Box::new(move |hasher| {
            let result = work(hasher);
            // Free before answering: a caller that goes on at once finds the place free.
            drop(self);
            let _ = answer.send(result);
        });
        match jobs.try_send(job) {
            Ok(()) => {}
            // Cannot happen while every job holds a permit and the queue has one slot each.
            Err(TrySendError::Full(_)) => return Err(ServiceError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(ServiceError::internal("the password-hashing threads are gone"));
            }
        }
        result.await.map_err(|_| ServiceError::internal("a password-hashing thread failed"))
    }
}

/// One of the gate's threads: at a low priority, with one buffer for its whole life, runs
/// jobs until the gate is dropped.
fn hashing_thread(queue: &Mutex<Receiver<Job>>, metrics: &PasswordMetrics, dummy: &str) {
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    if let Ok(value) = ThreadPriorityValue::try_from(THREAD_PRIORITY)
        && let Err(error) = thread_priority::set_current_thread_priority(ThreadPriority::Crossplatform(value))
    {
        tracing::debug!(?error, "password hashing runs at normal priority");
    }
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(job) = job else { return };
        job(&mut Hasher { memory: &mut memory, dummy, metrics });
        // A stored hash with a larger memory cost grew the buffer: give the excess back.
        let usual = params().block_count();
        if memory.len() > usual {
            memory.truncate(usual);
            memory.shrink_to_fit();
        }
    }
}

/// Argon2id on one of the gate's buffers. Only [`PasswordPermit::run`] makes one.
pub struct Hasher<'a> {
    memory: &'a mut Vec<Block>,
    dummy: &'a str,
    metrics: &'a PasswordMetrics,
}

impl Hasher<'_> {
    /// Hashes `password` with the gate's parameters and a random salt, as a PHC string.
    pub fn hash(&mut self, password: &str) -> ServiceResult<String> {
        let params = params();
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let mut out = [0u8; OUTPUT_LEN];
        let memory = self.memory_for(&params).map_err(ServiceError::internal)?;
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory)
            .map_err(|e| ServiceError::internal(format!("password hashing failed: {e}")))?;
        self.metrics.computed.fetch_add(1, Ordering::Relaxed);
        let phc = |e: argon2::password_hash::phc::Error| ServiceError::internal(format!("PHC encoding: {e}"));
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params)
                .map_err(|e| ServiceError::internal(format!("PHC parameters: {e}")))?,
            salt: Some(Salt::new(&salt).map_err(phc)?),
            hash: Some(Output::new(&out).map_err(phc)?),
        };
        Ok(hash.to_string())
    }

    /// Whether `password` matches the PHC string `hash` (any Argon2 variant and parameters);
    /// `None` verifies against a hash nothing matches, at the same cost. A malformed stored
    /// hash matches nothing (and is logged).
    pub fn verify(&mut self, password: &str, hash: Option<&str>) -> bool {
        let dummy = self.dummy;
        match self.verify_phc(password.as_bytes(), hash.unwrap_or(dummy)) {
            Ok(matches) => hash.is_some() && matches,
            Err(error) => {
                tracing::warn!(%error, "a stored password hash cannot be checked");
                false
            }
        }
    }

    fn verify_phc(&mut self, password: &[u8], phc: &str) -> Result<bool, String> {
        let hash = PasswordHash::new(phc).map_err(|e| e.to_string())?;
        let algorithm = Algorithm::new(hash.algorithm.as_str()).map_err(|e| e.to_string())?;
        let version =
            hash.version.map(Version::try_from).transpose().map_err(|e| e.to_string())?.unwrap_or_default();
        let params = Params::try_from(&hash).map_err(|e| e.to_string())?;
        let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
            return Err("the hash has no salt or no output".into());
        };
        let mut out = vec![0u8; expected.len()];
        let memory = self.memory_for(&params)?;
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt.as_ref(), &mut out, memory)
            .map_err(|e| e.to_string())?;
        self.metrics.computed.fetch_add(1, Ordering::Relaxed);
        // `Output`'s equality is constant-time.
        Ok(Output::new(&out).map_err(|e| e.to_string())? == *expected)
    }

    /// The buffer, grown to what `params` need.
    fn memory_for(&mut self, params: &Params) -> Result<&mut [Block], String> {
        if params.m_cost() > MAX_M_COST_KIB {
            return Err(format!(
                "memory cost {} KiB is over the {MAX_M_COST_KIB} KiB accepted",
                params.m_cost()
            ));
        }
        let blocks = params.block_count();
        if self.memory.len() < blocks {
            self.memory.resize(blocks, Block::default());
        }
        Ok(&mut self.memory[..blocks])
    }
}

/// A well-formed hash with the gate's parameters whose output no password produces (it is
/// all zeroes, not the output of any computation).
fn dummy_hash() -> String {
    let params = params();
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).unwrap_or_default(),
        salt: Salt::new(b"pulse-no-such-user").ok(),
        hash: Output::new(&[0u8; OUTPUT_LEN]).ok(),
    };
    hash.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_verify_and_carry_the_owasp_parameters() {
        let gate = PasswordGate::new(2);
        let hash = gate.hash("s3cret-pass".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(!hash.contains("s3cret-pass"));
        assert!(gate.verify("s3cret-pass".into(), Some(hash.clone())).await.expect("verify"));
        assert!(!gate.verify("s3cret-pasS".into(), Some(hash.clone())).await.expect("verify"));
        assert_ne!(hash, gate.hash("s3cret-pass".into()).await.expect("hash"), "salted");
        assert!(!gate.verify("anything".into(), None).await.expect("verify"), "no user: no match");
        assert!(!gate.verify("x".into(), Some("not a hash".into())).await.expect("verify"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_made_with_other_parameters_still_verify() {
        // As the crate's own hasher (and older Pulse versions) would store them.
        use argon2::PasswordHasher;
        let other = Params::new(7 * 1024, 5, 1, None).expect("params");
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, other)
            .hash_password(b"legacy-password")
            .expect("hash")
            .to_string();
        let gate = PasswordGate::new(1);
        assert!(gate.verify("legacy-password".into(), Some(stored.clone())).await.expect("verify"));
        assert!(!gate.verify("legacy-passwore".into(), Some(stored)).await.expect("verify"));
        let argon2i =
            Argon2::new(Algorithm::Argon2i, Version::V0x10, Params::new(64, 1, 1, None).expect("p"))
                .hash_password(b"older")
                .expect("hash")
                .to_string();
        assert!(gate.verify("older".into(), Some(argon2i)).await.expect("verify"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_the_bound_is_refused_at_once_and_the_memory_is_reused() {
        let gate = PasswordGate::new(2);
        let (started, release) =
            (Arc::new(tokio::sync::Barrier::new(3)), Arc::new(std::sync::Barrier::new(3)));
        let mut running = Vec::new();
        for _ in 0..2 {
            let (gate, started, release) = (gate.clone(), started.clone(), release.clone());
            running.push(tokio::spawn(async move {
                let handle = tokio::runtime::Handle::current();
                gate.run(move |h| {
                    handle.block_on(started.wait());
                    release.wait();
                    h.hash("held").is_ok()
                })
                .await
            }));
        }
        started.wait().await;
        let at = std::time::Instant::now();
        assert!(matches!(gate.verify("x".into(), None).await, Err(ServiceError::Busy)));
        assert!(at.elapsed() < std::time::Duration::from_millis(50), "refused without waiting");
        assert_eq!(gate.metrics().refused.load(Ordering::Relaxed), 1);
        release.wait();
        for task in running {
            assert!(task.await.expect("joins").expect("ran"));
        }
        // Both permits are back.
        assert!(gate.verify("x".into(), None).await.is_ok());
        assert_eq!(gate.inner.permits.available_permits(), 2);
    }
}
