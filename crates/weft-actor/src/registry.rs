//! Named actors, looked up by name.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::error::RegistryError;

/// A map from names to actor references, shared by clones.
///
/// A name stays registered while its actor is alive (a supervised actor is
/// alive across restarts). Once the actor has terminated for good, lookups
/// miss and the name may be registered again.
///
/// ```
/// use weft_actor::{Actor, Context, Registry};
///
/// struct Logger;
/// impl Actor for Logger {
///     type Msg = String;
///     async fn handle(&mut self, line: String, _: &mut Context<Self>) { println!("{line}"); }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = Registry::new();
/// let logger = weft_actor::spawn(Logger);
/// registry.register("logger", &logger).unwrap();
/// assert!(registry.register("logger", &logger).is_err(), "taken");
///
/// let found = registry.lookup::<Logger>("logger").unwrap();
/// assert!(found.same_actor(&logger));
/// found.tell("hello".into()).await.unwrap();
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<HashMap<String, Entry>>>,
}

struct Entry {
    actor: Box<dyn Any + Send + Sync>,
    alive: Box<dyn Fn() -> bool + Send + Sync>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The process-wide registry.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// Registers `actor` under `name`. Fails if a live actor holds the name;
    /// a terminated one is replaced.
    pub fn register<A: Actor>(
        &self,
        name: impl Into<String>,
        actor: &ActorRef<A>,
    ) -> Result<(), RegistryError> {
        let name = name.into();
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = map.get(&name) {
            if (old.alive)() {
                return Err(RegistryError::Taken(name));
            }
        }
        let probe = actor.clone();
        map.insert(
            name.clone(),
            Entry {
                actor: Box::new(actor.clone()),
                alive: Box::new(move || probe.is_alive()),
            },
        );
        tracing::debug!(%name, "actor registered");
        Ok(())
    }

    /// The live actor of type `A` registered under `name`, if any. (A name
    /// registered with another actor type also misses.)
    pub fn lookup<A: Actor>(&self, name: &str) -> Option<ActorRef<A>> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let entry = map.get(name)?;
        if !(entry.alive)() {
            return None;
        }
        entry.actor.downcast_ref::<ActorRef<A>>().cloned()
    }

    /// Removes `name`; `true` if it was registered.
    pub fn unregister(&self, name: &str) -> bool {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }

    /// The names of live actors, sorted; forgets terminated ones.
    pub fn names(&self) -> Vec<String> {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| (e.alive)());
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        names
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("Registry")
            .field("names", &map.len())
            .finish()
    }
}
