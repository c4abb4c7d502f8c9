//! Actors under supervision, used through tower, stopped gracefully.
//!
//! What it shows:
//! 1. A bank of account actors under a one-for-one supervisor. Each account
//!    persists its balance to a (simulated) ledger, and its factory reloads
//!    it, so a restart loses nothing that was committed. Account `acc-2`
//!    panics on a bad message (a negative deposit); the supervisor restarts
//!    it and its `ActorRef` keeps working: messages sent during the restart
//!    wait in the mailbox and reach the new incarnation. The ask that carried
//!    the bad message gets a `Panicked` error.
//! 2. An actor used through tower layers: `ActorRef` is a `tower::Service`,
//!    so a timeout and a rate limit come from `ServiceBuilder`.
//! 3. A graceful stop: the supervisor stops the accounts in reverse order,
//!    each one draining its mailbox first, and returns a report in which
//!    every message is accounted for.
//!
//! Run it: `cargo run --example actors`
//!
//! What to look for: the `ERROR ... actor handler panicked` and the restart
//! in the log, `acc-2` answering after its restart with its committed
//! balance, the rate-limited calls spaced 100 ms apart with the slow one
//! timing out at 200 ms (the next one waits behind it in the mailbox, then
//! succeeds), and the final report (`accepted = completed + failed +
//! returned`) with total money conserved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use weft_actor::supervisor::{Backoff, ChildSpec, Strategy, SupervisorBuilder};
use weft_actor::{Actor, AskError, AskFor, Context, Reply};

/// Where committed balances live (a database in a real service).
type Ledger = Arc<Mutex<HashMap<String, i64>>>;

struct Account {
    id: String,
    balance: i64,
    ledger: Ledger,
}

enum AccountMsg {
    Deposit(i64, Reply<i64>),
    Balance(Reply<i64>),
}

impl Actor for Account {
    type Msg = AccountMsg;

    async fn handle(&mut self, msg: AccountMsg, _ctx: &mut Context<Self>) {
        match msg {
            AccountMsg::Deposit(amount, reply) => {
                // A bug in the handler: it trusts its input.
                assert!(amount >= 0, "negative deposit of {amount} into {}", self.id);
                self.balance += amount;
                self.ledger
                    .lock()
                    .unwrap()
                    .insert(self.id.clone(), self.balance);
                let _ = reply.send(self.balance);
            }
            AccountMsg::Balance(reply) => {
                let _ = reply.send(self.balance);
            }
        }
    }
}

/// A quote service: answers slowly for some symbols.
struct Quotes;

struct Quote(&'static str);

enum QuoteMsg {
    Get(&'static str, Reply<u32>),
}

impl Actor for Quotes {
    type Msg = QuoteMsg;
    async fn handle(&mut self, msg: QuoteMsg, _ctx: &mut Context<Self>) {
        let QuoteMsg::Get(symbol, reply) = msg;
        if symbol == "SLOW" {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let _ = reply.send(symbol.len() as u32 * 100);
    }
}

impl AskFor<Quote> for Quotes {
    type Reply = u32;
    fn wrap(req: Quote, reply: Reply<u32>) -> QuoteMsg {
        QuoteMsg::Get(req.0, reply)
    }
}

#[tokio::main]
async fn main() {
    weft_examples::init_tracing();
    let ledger: Ledger = Arc::default();

    // 1. A supervised bank.
    let mut bank = SupervisorBuilder::new("bank")
        .strategy(Strategy::OneForOne)
        .intensity(3, Duration::from_secs(5))
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_secs(1),
        ));
    let mut accounts = Vec::new();
    for i in 1..=3 {
        let id = format!("acc-{i}");
        let ledger = ledger.clone();
        let factory_id = id.clone();
        // The factory reloads the committed balance at every (re)start.
        let spec = ChildSpec::new(id, move || Account {
            balance: *ledger.lock().unwrap().get(&factory_id).unwrap_or(&0),
            id: factory_id.clone(),
            ledger: ledger.clone(),
        });
        accounts.push(bank.add(spec).expect("valid child"));
    }
    let bank = bank.start().expect("valid supervisor");

    for (i, acc) in accounts.iter().enumerate() {
        let balance = acc
            .ask_with(|r| AccountMsg::Deposit(100 * (i as i64 + 1), r))
            .await
            .unwrap();
        println!("{}: deposited, balance {balance}", acc.name());
    }

    let acc2 = &accounts[1];
    match acc2.ask_with(|r| AccountMsg::Deposit(-50, r)).await {
        Err(AskError::Panicked(p)) => println!("acc-2: bad deposit refused: {p}"),
        other => println!("acc-2: unexpected {other:?}"),
    }
    // Sent while acc-2 restarts: they wait in its mailbox.
    for _ in 0..5 {
        acc2.tell(AccountMsg::Deposit(10, Reply::detached()))
            .await
            .unwrap();
    }
    let after = acc2.ask_with(AccountMsg::Balance).await.unwrap();
    println!(
        "acc-2: after restart #{}, balance {after} (200 committed + 5 x 10 sent during the restart)",
        acc2.stats().restarts
    );
    assert_eq!(after, 250);

    // 2. An actor through tower layers: timeout + rate limit.
    let quotes = weft_actor::Builder::new()
        .name("quotes")
        .spawn(Quotes)
        .expect("valid mailbox");
    let mut svc = ServiceBuilder::new()
        .rate_limit(1, Duration::from_millis(100))
        .timeout(Duration::from_millis(200))
        .service(quotes.clone());
    let start = Instant::now();
    for symbol in ["ABC", "WEFT", "SLOW", "XY"] {
        let result = svc.ready().await.unwrap().call(Quote(symbol)).await;
        let t = start.elapsed().as_millis();
        match result {
            Ok(price) => println!("quote {symbol:>4} = {price:>4} at {t:>4} ms"),
            Err(e) => println!("quote {symbol:>4} failed at {t:>4} ms: {e}"),
        }
    }

    // 3. Graceful stop, with a report.
    for acc in &accounts {
        acc.tell(AccountMsg::Deposit(1, Reply::detached()))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let report = bank.shutdown(deadline).await;
    println!("{report}");
    let quotes_report = quotes.stop(deadline).await;
    println!("{quotes_report}");
    let total: i64 = ledger.lock().unwrap().values().sum();
    println!("money in the ledger: {total} (expected 100 + 250 + 300 + 3 = 653)");
    assert!(report.is_balanced() && quotes_report.is_balanced());
    assert_eq!(total, 653);
}
