//! Fault injection inside the gateway (`--enable-fault-injection`): the `Faults` actor that owns the
//! rules and the applied-fault log (`mishards_fault::FaultBook`), the crash timers, and the in-process
//! handle (`FaultHandle`) the admin listener and the chaos runner use. The channel that applies rules
//! on the gateway → node edge is `fault_channel`; the messages the actors share are in `control`.
//!
//! How rules travel: `Faults` publishes each new `FaultPlan` by message — `SetFaults` to `Cluster`
//! (which hands `SetLinkFaults` to every node link, and to links it starts later) and to the
//! `MetadataPoller`. A node link turns the plan into its own `SiteFaults` (the rules that hit it and
//! their random streams) and hands that to its pooled channels through a `tokio::sync::watch`: a
//! channel reads the current value per call, without a lock on any actor's state. Applied faults come
//! back to `Faults` as `RecordFaults`.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;

use crate::cluster::Cluster;
use crate::control::{Crash, CrashLink, RecordFaults, SetFaults, now};
use crate::discovery::Discovery;
use crate::metadata::MetadataPoller;
use crate::routing::Routing;
use mishards_fault::{
    ActorName, FaultBook, FaultError, FaultInjector, FaultKind, FaultReport, FaultRule,
    LoggedFault, Outcome, Site, Target,
};

/// Arms rules; answers their ids (all are checked first: all or none).
#[derive(Message)]
#[rtype(result = "Result<Vec<u64>, FaultError>")]
pub struct AddFaults(pub Vec<FaultRule>);

#[derive(Message)]
#[rtype(result = "Result<(), FaultError>")]
pub struct RemoveFault(pub u64);

/// Removes every rule (the log stays).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClearFaults;

/// Forgets the applied faults (the rules stay).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClearFaultLog;

#[derive(Message)]
#[rtype(result = "FaultReport")]
pub struct GetFaults;

/// The actors a `crash` rule can stop, and the cluster and poller that take new plans.
pub struct FaultTargets {
    pub cluster: Addr<Cluster>,
    pub poller: Addr<MetadataPoller>,
    pub routing: Addr<Routing>,
    pub discovery: Addr<Discovery>,
}

/// Owns the rules, the seed and the applied-fault log; publishes plans; runs crash timers.
pub struct Faults {
    book: FaultBook,
    targets: FaultTargets,
    /// The crash sites' injectors, by actor name (stream positions carried across plans).
    crash_sites: HashMap<String, FaultInjector>,
}

impl Faults {
    pub fn new(seed: u64, targets: FaultTargets) -> Faults {
        Faults {
            book: FaultBook::new(seed, now()),
            targets,
            crash_sites: HashMap::new(),
        }
    }

    fn publish(&mut self, ctx: &mut Context<Self>) {
        let plan = self.book.plan();
        let set = SetFaults {
            plan: plan.clone(),
            log: ctx.address().recipient(),
        };
        self.targets.cluster.do_send(set.clone());
        self.targets.poller.do_send(set);
        let at = now();
        let mut sites = HashMap::new();
        for armed in &plan.rules {
            if let Target::Actor(actor) = &armed.rule.target {
                let name = actor.to_string();
                if let std::collections::hash_map::Entry::Vacant(site) = sites.entry(name) {
                    let previous = self.crash_sites.get(site.key());
                    site.insert(FaultInjector::new(
                        plan.clone(),
                        Site::Actor(actor.clone()),
                        at,
                        previous,
                    ));
                }
            }
        }
        self.crash_sites = sites;
    }

    /// Runs when crash rule `id`'s window opens, and every `every` after while it stays open.
    fn crash_tick(&mut self, id: u64, ctx: &mut Context<Self>) {
        let Some(armed) = self.book.rule(id) else {
            return; // removed
        };
        let (Target::Actor(actor), FaultKind::Crash { every }) =
            (&armed.rule.target, &armed.rule.kind)
        else {
            return;
        };
        let (actor, every, closes) = (actor.clone(), *every, armed.closes_at());
        let at = now();
        let Some(site) = self.crash_sites.get(&actor.to_string()) else {
            return;
        };
        let decision = site.decide_rule(id, "crash", at);
        if decision.outcome == Outcome::Crash {
            tracing::warn!(%actor, rule = id, "fault injection: crashing a supervised actor");
            match &actor {
                ActorName::Discovery => self.targets.discovery.do_send(Crash),
                ActorName::Poller => self.targets.poller.do_send(Crash),
                ActorName::Routing => self.targets.routing.do_send(Crash),
                ActorName::Link(node) => self.targets.cluster.do_send(CrashLink(node.clone())),
            }
            self.book.record(decision.applied);
        }
        if let Some(every) = every
            && closes.is_none_or(|end| at + every < end)
        {
            ctx.run_later(every, move |act, ctx| act.crash_tick(id, ctx));
        }
    }
}

impl Actor for Faults {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(super::REQUEST_MAILBOX);
        tracing::warn!(
            seed = self.book.seed(),
            "fault injection is ON: rules come from the admin listener's /faults or the in-process handle"
        );
    }
}

impl Handler<AddFaults> for Faults {
    type Result = Result<Vec<u64>, FaultError>;
    fn handle(&mut self, AddFaults(rules): AddFaults, ctx: &mut Context<Self>) -> Self::Result {
        let at = now();
        let ids = self.book.add(rules, at)?;
        for id in &ids {
            if let Some(armed) = self.book.rule(*id) {
                tracing::info!(
                    rule = id,
                    spec = %serde_json::to_string(&armed.rule).unwrap_or_default(),
                    "fault rule added"
                );
                if matches!(armed.rule.kind, FaultKind::Crash { .. }) {
                    let id = *id;
                    let wait = armed.opens_at().saturating_duration_since(at);
                    ctx.run_later(wait, move |act, ctx| act.crash_tick(id, ctx));
                }
            }
        }
        self.publish(ctx);
        Ok(ids)
    }
}

impl Handler<RemoveFault> for Faults {
    type Result = Result<(), FaultError>;
    fn handle(&mut self, RemoveFault(id): RemoveFault, ctx: &mut Context<Self>) -> Self::Result {
        self.book.remove(id)?;
        tracing::info!(rule = id, "fault rule removed");
        self.publish(ctx);
        Ok(())
    }
}

impl Handler<ClearFaults> for Faults {
    type Result = ();
    fn handle(&mut self, _: ClearFaults, ctx: &mut Context<Self>) {
        self.book.clear();
        tracing::info!("fault rules cleared");
        self.publish(ctx);
    }
}

impl Handler<ClearFaultLog> for Faults {
    type Result = ();
    fn handle(&mut self, _: ClearFaultLog, _: &mut Context<Self>) {
        self.book.clear_log();
    }
}

impl Handler<RecordFaults> for Faults {
    type Result = ();
    fn handle(&mut self, RecordFaults(applied): RecordFaults, _: &mut Context<Self>) {
        self.book.record(applied);
    }
}

impl Handler<GetFaults> for Faults {
    type Result = MessageResult<GetFaults>;
    fn handle(&mut self, _: GetFaults, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.report(now()))
    }
}

/// How long the handle waits for the `Faults` actor.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Fault injection from inside the process (the chaos runner, tests) and the admin listener: every
/// call is a message to the `Faults` actor, bounded to 5 s.
#[derive(Clone)]
pub struct FaultHandle {
    faults: Addr<Faults>,
    seed: u64,
}

impl FaultHandle {
    pub fn new(faults: Addr<Faults>, seed: u64) -> FaultHandle {
        FaultHandle { faults, seed }
    }

    /// The seed every fault decision derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    async fn ask<M>(&self, message: M) -> Result<M::Result, FaultError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Faults: Handler<M>,
    {
        self.faults
            .send(message)
            .timeout(ASK_TIMEOUT)
            .await
            .map_err(|e| FaultError::Unavailable(e.to_string()))
    }

    /// Arms one rule; answers its id.
    pub async fn add(&self, rule: FaultRule) -> Result<u64, FaultError> {
        let ids = self.add_all(vec![rule]).await?;
        ids.first()
            .copied()
            .ok_or_else(|| FaultError::Unavailable("no id given".into()))
    }

    /// Arms rules (all or none); answers their ids.
    pub async fn add_all(&self, rules: Vec<FaultRule>) -> Result<Vec<u64>, FaultError> {
        self.ask(AddFaults(rules)).await?
    }

    pub async fn remove(&self, id: u64) -> Result<(), FaultError> {
        self.ask(RemoveFault(id)).await?
    }

    /// Removes every rule (the log stays).
    pub async fn clear(&self) -> Result<(), FaultError> {
        self.ask(ClearFaults).await
    }

    /// Forgets the applied faults.
    pub async fn clear_log(&self) -> Result<(), FaultError> {
        self.ask(ClearFaultLog).await
    }

    /// The rules, the seed and the applied faults.
    pub async fn report(&self) -> Result<FaultReport, FaultError> {
        self.ask(GetFaults).await
    }

    /// The applied faults, oldest first.
    pub async fn log(&self) -> Result<Vec<LoggedFault>, FaultError> {
        Ok(self.report().await?.log)
    }
}

/// A seed for a gateway started without `--fault-seed`: from the clock and the process id (it is
/// logged, so a run can be replayed).
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}
