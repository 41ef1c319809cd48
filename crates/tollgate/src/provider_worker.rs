//! The provider worker of `tollgate serve`: takes due calls from the provider outbox and
//! carries them out against Stripe's API, one call at a time, step by step.
//!
//! Owns: the Stripe HTTP client (form-encoded requests, `Authorization: Bearer <secret key>`,
//! an `Idempotency-Key` on every POST), the steps of each call kind and how each step's object
//! is found again after a lost answer. Does not own: what is due, leases and the record of
//! steps and attempts (`tollgate_store::providers`), idempotency keys, which answers are
//! retried and the backoff schedule (`tollgate_core::provider`, `tollgate_core::webhook`).
//!
//! A step runs as: intent recorded → request sent with the step's idempotency key → outcome
//! (the provider's id) recorded. A step whose intent is recorded without an outcome may have
//! reached Stripe (a crash, a timeout, a 5xx after the work was done): before sending it
//! again the worker looks for the object by the Tollgate metadata it carries
//! (`tollgate_key`, `tollgate_invoice` + `tollgate_line`), and sends it with the same key
//! otherwise; Stripe answers a repeated key with the first result. Either way no second
//! Stripe object is created.
//!
//! Calls run one at a time: a push creates the invoice's items as pending items of the Stripe
//! customer and then the invoice that takes them, so two pushes for one customer must not
//! interleave. Before finalizing, the worker checks that Stripe's `amount_due` equals
//! Tollgate's; a difference fails the call instead of finalizing a wrong invoice.

use std::sync::Arc;

use serde_json::Value;
use tollgate_api::AppState;
use tollgate_core::invoice::InvoiceStatus;
use tollgate_core::provider::{
    self, CallKind, METADATA_INVOICE, METADATA_KEY, METADATA_REFUND, Provider, idempotency_key,
};
use tollgate_core::time::UnixMs;
use tollgate_core::webhook::Backoff;
use tollgate_store::billing::BillingStoreError;
use tollgate_store::billing::refunds::{REFUND_STEP, RefundBegin};
use tollgate_store::providers::{Call, Outcome, StepRecord};

use crate::outbox_worker::{self, CallAttempt, Wakes, describe};

/// How long a claimed call is leased (ms). Leases are released when the server starts, so
/// this only has to outlast one call of a running process (many requests, each with its
/// timeout).
pub const CALL_LEASE_MS: i64 = 30 * 60 * 1000;
/// Most pages read when looking an object up after a lost answer (100 objects a page).
pub const LOOKUP_PAGES_MAX: usize = 100;
/// Most entries of a customer's metadata copied to Stripe (Stripe allows 50 keys; one is
/// `tollgate_key`).
pub const METADATA_ENTRIES_MAX: usize = 49;

/// Settings of the Stripe worker.
#[derive(Clone, Debug)]
pub struct StripeConfig {
    /// `https://api.stripe.com` (tests: a local fake).
    pub api_base: String,
    /// The secret API key (`sk_…`).
    pub secret_key: String,
    /// The retry schedule.
    pub backoff: Backoff,
    /// Attempts of one call before it is marked failed.
    pub attempts_max: u32,
    /// Timeout of one request (ms).
    pub timeout_ms: i64,
    /// Test-only fault injection (`serve --fault-exit-after-provider-step`, hidden): the
    /// process exits right after Stripe answered the step of this name (`create-customer-KEY`,
    /// `item-1`, `invoice`, `finalize`, …) and before its outcome is recorded — the crash the
    /// step records exist for.
    pub fault_exit_after_step: Option<String>,
}

/// Why a step failed.
#[derive(Debug)]
struct Failure {
    step: String,
    http_status: Option<u16>,
    message: String,
    retryable: bool,
}

impl Failure {
    fn permanent(step: &str, message: impl Into<String>) -> Failure {
        Failure {
            step: step.into(),
            http_status: None,
            message: message.into(),
            retryable: false,
        }
    }

    fn internal(step: &str, message: impl Into<String>) -> Failure {
        Failure {
            step: step.into(),
            http_status: None,
            message: message.into(),
            retryable: true,
        }
    }
}

type Form = Vec<(String, String)>;

/// Runs forever (until the runtime stops).
pub async fn run(state: Arc<AppState>, config: StripeConfig) {
    let client = match outbox_worker::http_client(
        config.timeout_ms,
        concat!("Tollgate/", env!("CARGO_PKG_VERSION")),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("Stripe sync is off: the HTTP client did not start: {e}");
            return;
        }
    };
    let fault_step = config.fault_exit_after_step.clone();
    let worker = Worker {
        state,
        stripe: Stripe {
            client,
            base: config.api_base.trim_end_matches('/').to_owned(),
            key: config.secret_key.clone(),
        },
        config,
        fault_step,
    };
    // The Stripe loop alone listens for wakes (one wake-up reaches one waiter); Orb's polls.
    let worker = &worker;
    outbox_worker::run_calls(
        &worker.state,
        Provider::Stripe,
        CALL_LEASE_MS,
        Wakes::Listen,
        "provider call claim",
        |call| worker.execute(call),
    )
    .await;
}

struct Stripe {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Stripe {
    async fn request(
        &self,
        step: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<Value, Failure> {
        let resp = builder
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| Failure {
                step: step.into(),
                http_status: None,
                message: describe(&e),
                retryable: true,
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(Failure {
                step: step.into(),
                http_status: Some(status),
                message: format!("Stripe answered {status}: {message}"),
                retryable: provider::retryable(Some(status)),
            });
        }
        serde_json::from_str(&text).map_err(|e| Failure {
            step: step.into(),
            http_status: Some(status),
            message: format!("Stripe's answer is not JSON: {e}"),
            retryable: true,
        })
    }

    async fn post(&self, step: &str, path: &str, form: &Form, key: &str) -> Result<Value, Failure> {
        let b = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Idempotency-Key", key)
            .form(form);
        self.request(step, b).await
    }

    async fn get(&self, step: &str, path: &str, query: &Form) -> Result<Value, Failure> {
        let b = self.client.get(format!("{}{path}", self.base)).query(query);
        self.request(step, b).await
    }

    /// The first object of a list endpoint for which `matches` holds, reading every page (up
    /// to [`LOOKUP_PAGES_MAX`]).
    async fn find(
        &self,
        step: &str,
        path: &str,
        filter: &Form,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<String>, Failure> {
        let mut after: Option<String> = None;
        for _ in 0..LOOKUP_PAGES_MAX {
            let mut query = filter.clone();
            query.push(("limit".into(), "100".into()));
            if let Some(a) = &after {
                query.push(("starting_after".into(), a.clone()));
            }
            let page = self.get(step, path, &query).await?;
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(found) = data.iter().find(|o| matches(o)) {
                return Ok(found.get("id").and_then(Value::as_str).map(str::to_owned));
            }
            let more = page.get("has_more").and_then(Value::as_bool) == Some(true);
            after = data
                .last()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if !more || after.is_none() {
                return Ok(None);
            }
        }
        Ok(None)
    }
}

fn metadata_is(object: &Value, key: &str, value: &str) -> bool {
    object
        .get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        == Some(value)
}

fn id_of(step: &str, v: &Value) -> Result<String, Failure> {
    v.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Failure::internal(step, "Stripe's answer has no id"))
}

/// How a step begins: done before (its id), or to be sent; `recover`: its intent was recorded
/// without an outcome, so look the object up first.
enum Begin {
    Done(String),
    Send { recover: bool },
}

struct Worker {
    state: Arc<AppState>,
    stripe: Stripe,
    config: StripeConfig,
    fault_step: Option<String>,
}

/// An object mapping to record with a step's outcome: (kind, Tollgate key, provider customer,
/// amount due).
type ObjectRecord<'a> = Option<(&'a str, &'a str, Option<&'a str>, i64)>;

impl Worker {
    async fn db<T: Send + 'static>(
        &self,
        step: &str,
        f: impl FnOnce(&AppState) -> Result<T, String> + Send + 'static,
    ) -> Result<T, Failure> {
        let st = Arc::clone(&self.state);
        match tokio::task::spawn_blocking(move || f(&st)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::internal(step, e)),
            Err(e) => Err(Failure::internal(step, format!("panicked: {e}"))),
        }
    }

    fn now(&self) -> UnixMs {
        self.state.engine.now()
    }

    /// One attempt of a call, recorded with what follows it.
    async fn execute(&self, call: Call) {
        let attempt = CallAttempt::start(self.now());
        let result = match call.kind {
            CallKind::SyncCustomer => self.sync_customer(&call).await,
            CallKind::PushInvoice => self.push_invoice(&call).await,
            CallKind::CreateRefund => self.create_refund(&call).await,
        };
        let (outcome, attempt) = match result {
            Ok(()) => (Outcome::Done, attempt.done()),
            Err(f) => {
                let outcome = outbox_worker::after_failure(
                    &call,
                    f.retryable,
                    self.config.attempts_max,
                    &self.config.backoff,
                    self.now(),
                );
                tracing::warn!(call = %call.id, kind = call.kind.as_str(), object = %call.object_id,
                    step = %f.step, ?outcome, "Stripe call failed: {}", f.message);
                if call.kind == CallKind::CreateRefund && !f.retryable {
                    // Refused for good (a 4xx other than 409/429, or no charge): nothing was
                    // refunded. A call out of attempts after answers it may have acted on
                    // stays pending instead: reconciliation reports it.
                    self.refund_refused(&call.object_id, &f.message).await;
                }
                (outcome, attempt.failed(f.step, f.http_status, f.message))
            }
        };
        outbox_worker::record_call(
            &self.state,
            "recording a Stripe call",
            call.id,
            attempt,
            outcome,
        )
        .await;
    }

    async fn begin(&self, call: &Call, step: &str, shared: bool) -> Result<Begin, Failure> {
        let (id, name) = (call.id.clone(), step.to_owned());
        let record = self
            .db(step, move |st| {
                st.providers.step(&id, &name).map_err(|e| e.to_string())
            })
            .await?;
        Ok(match record {
            StepRecord::Done(pid) => Begin::Done(pid),
            StepRecord::Unknown => Begin::Send { recover: true },
            // A step shared between calls (creating a customer) may have been left unknown by
            // another call.
            StepRecord::NotSent if shared => {
                let name = step.to_owned();
                let unknown = self
                    .db(step, move |st| {
                        st.providers
                            .step_unknown_anywhere(&name)
                            .map_err(|e| e.to_string())
                    })
                    .await?;
                Begin::Send { recover: unknown }
            }
            StepRecord::NotSent => Begin::Send { recover: false },
        })
    }

    async fn intent(&self, call: &Call, step: &str, key: &str) -> Result<(), Failure> {
        let (id, name, key, now) = (call.id.clone(), step.to_owned(), key.to_owned(), self.now());
        self.db(step, move |st| {
            st.providers
                .step_intent(&id, &name, &key, now)
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn done(
        &self,
        call: &Call,
        step: &str,
        provider_id: &str,
        object: ObjectRecord<'_>,
    ) -> Result<(), Failure> {
        let (id, name, pid, now) = (
            call.id.clone(),
            step.to_owned(),
            provider_id.to_owned(),
            self.now(),
        );
        let object = object
            .map(|(k, key, cus, due)| (k.to_owned(), key.to_owned(), cus.map(str::to_owned), due));
        self.db(step, move |st| {
            st.providers
                .step_done(
                    &id,
                    &name,
                    &pid,
                    object
                        .as_ref()
                        .map(|(k, key, cus, due)| (k.as_str(), key.as_str(), cus.as_deref(), *due)),
                    Provider::Stripe,
                    now,
                )
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// The test-only crash between a provider's answer and its record.
    fn fault(&self, step: &str) {
        if self.fault_step.as_deref() == Some(step) {
            eprintln!("fault injection: exiting after Stripe answered step {step}");
            std::process::exit(86);
        }
    }

    /// Sends a POST step unless it is done; records intent before and outcome after.
    #[allow(clippy::too_many_arguments)]
    async fn post_step(
        &self,
        call: &Call,
        step: &str,
        key: &str,
        path: &str,
        form: &Form,
        object: ObjectRecord<'_>,
    ) -> Result<(String, Value), Failure> {
        self.intent(call, step, key).await?;
        let answer = self.stripe.post(step, path, form, key).await?;
        self.fault(step);
        let id = id_of(step, &answer)?;
        self.done(call, step, &id, object).await?;
        Ok((id, answer))
    }

    // ---- customers ----

    async fn load_customer(
        &self,
        step: &str,
        key: &str,
    ) -> Result<tollgate_core::billing::Customer, Failure> {
        let k = key.to_owned();
        let customer = self
            .db(step, move |st| {
                let key = tollgate_core::billing::CustomerKey::parse(&k)
                    .map_err(|e| format!("customer key {k}: {e}"))?;
                st.billing.customer(&key).map_err(|e| e.to_string())
            })
            .await;
        customer.map_err(|f| Failure {
            retryable: !f.message.contains("not found"),
            ..f
        })
    }

    fn customer_form(customer: &tollgate_core::billing::Customer) -> Form {
        let mut form: Form = vec![("name".into(), customer.name.clone())];
        if let Some(email) = &customer.email {
            form.push(("email".into(), email.clone()));
        }
        for (k, v) in customer
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != METADATA_KEY)
            .take(METADATA_ENTRIES_MAX)
        {
            form.push((format!("metadata[{k}]"), v.clone()));
        }
        form.push((
            format!("metadata[{METADATA_KEY}]"),
            customer.key.as_str().to_owned(),
        ));
        form
    }

    /// The Stripe customer of `customer`, created if there is none. The step and its
    /// idempotency key are the same from every call, so a creation left unknown by one call is
    /// found by the next.
    async fn ensure_customer(
        &self,
        call: &Call,
        customer: &tollgate_core::billing::Customer,
    ) -> Result<String, Failure> {
        let key = customer.key.as_str().to_owned();
        let step = format!("create-customer-{key}");
        let k = key.clone();
        if let Some(known) = self
            .db(&step, move |st| {
                st.providers
                    .object(Provider::Stripe, "customer", &k)
                    .map_err(|e| e.to_string())
            })
            .await?
        {
            return Ok(known.provider_id);
        }
        match self.begin(call, &step, true).await? {
            Begin::Done(id) => return Ok(id),
            Begin::Send { recover: true } => {
                if let Some(found) = self
                    .stripe
                    .find(&step, "/v1/customers", &Form::new(), |o| {
                        metadata_is(o, METADATA_KEY, &key)
                    })
                    .await?
                {
                    self.intent(call, &step, "recovered").await?;
                    self.done(call, &step, &found, Some(("customer", &key, None, 0)))
                        .await?;
                    return Ok(found);
                }
            }
            Begin::Send { recover: false } => {}
        }
        let idem = idempotency_key(CallKind::SyncCustomer, &key, 0, "create");
        let (id, _) = self
            .post_step(
                call,
                &step,
                &idem,
                "/v1/customers",
                &Self::customer_form(customer),
                Some(("customer", &key, None, 0)),
            )
            .await?;
        Ok(id)
    }

    async fn sync_customer(&self, call: &Call) -> Result<(), Failure> {
        let customer = self.load_customer("load", &call.object_id).await?;
        let key = customer.key.as_str().to_owned();
        let k = key.clone();
        let known = self
            .db("load", move |st| {
                st.providers
                    .object(Provider::Stripe, "customer", &k)
                    .map_err(|e| e.to_string())
            })
            .await?;
        let Some(known) = known else {
            // Created now, from this version of the customer: nothing left to update.
            self.ensure_customer(call, &customer).await?;
            return Ok(());
        };
        let step = "update-customer";
        if let Begin::Done(_) = self.begin(call, step, false).await? {
            return Ok(());
        }
        // An update sends the whole state of this version: repeating it is harmless.
        let idem = idempotency_key(CallKind::SyncCustomer, &key, call.version, "update");
        self.post_step(
            call,
            step,
            &idem,
            &format!("/v1/customers/{}", known.provider_id),
            &Self::customer_form(&customer),
            None,
        )
        .await?;
        Ok(())
    }

    // ---- invoices ----

    async fn push_invoice(&self, call: &Call) -> Result<(), Failure> {
        let id = call.object_id.clone();
        let i = id.clone();
        let invoice = self
            .db("load", move |st| {
                st.billing.invoice(&i).map_err(|e| e.to_string())
            })
            .await?;
        match invoice.status {
            InvoiceStatus::Finalized | InvoiceStatus::Paid => {}
            InvoiceStatus::Draft => {
                return Err(Failure::permanent("load", "the invoice is a draft"));
            }
            InvoiceStatus::Void => {
                // Voided before it reached Stripe: there is nothing to collect.
                tracing::info!(invoice = %id, "voided before its push; not sent to Stripe");
                return Ok(());
            }
        }
        let customer = self
            .load_customer("load", invoice.content.draft.customer.as_str())
            .await?;
        let cus = self.ensure_customer(call, &customer).await?;
        let draft = &invoice.content.draft;
        let currency = draft.currency.code().to_ascii_lowercase();
        let number = invoice.number.clone().unwrap_or_else(|| id.clone());
        // (step, description, amount): every line, then tax and credits as their own items,
        // so that Stripe's amount due equals Tollgate's.
        let mut items: Vec<(String, String, i64)> = draft
            .lines
            .iter()
            .map(|l| {
                (
                    format!("item-{}", l.number),
                    l.description.clone(),
                    l.amount_minor,
                )
            })
            .collect();
        if draft.tax_minor != 0 {
            items.push(("item-tax".into(), "Tax".into(), draft.tax_minor));
        }
        if invoice.content.credits_applied_minor != 0 {
            items.push((
                "item-credits".into(),
                "Prepaid credit applied".into(),
                -invoice.content.credits_applied_minor,
            ));
        }
        let invoice_step = "invoice";
        let invoice_begun = self.begin(call, invoice_step, false).await?;
        if !matches!(invoice_begun, Begin::Done(_)) {
            for (step, description, amount) in &items {
                self.push_item(call, &cus, &currency, &id, step, description, *amount)
                    .await?;
            }
        }
        let stripe_invoice = match invoice_begun {
            Begin::Done(pid) => pid,
            Begin::Send { recover } => {
                let found = if recover {
                    self.stripe
                        .find(
                            invoice_step,
                            "/v1/invoices",
                            &vec![("customer".into(), cus.clone())],
                            |o| metadata_is(o, METADATA_INVOICE, &id),
                        )
                        .await?
                } else {
                    None
                };
                match found {
                    Some(pid) => {
                        self.done(
                            call,
                            invoice_step,
                            &pid,
                            Some(("invoice", &id, Some(&cus), 0)),
                        )
                        .await?;
                        pid
                    }
                    None => {
                        let form: Form = vec![
                            ("customer".into(), cus.clone()),
                            ("description".into(), format!("Tollgate invoice {number}")),
                            ("pending_invoice_items_behavior".into(), "include".into()),
                            // Stripe collects it (charges or e-mails it) once finalized.
                            ("auto_advance".into(), "true".into()),
                            (format!("metadata[{METADATA_INVOICE}]"), id.clone()),
                            (format!("metadata[{METADATA_KEY}]"), id.clone()),
                            ("metadata[tollgate_number]".into(), number.clone()),
                        ];
                        let idem =
                            idempotency_key(CallKind::PushInvoice, &id, call.version, "invoice");
                        self.post_step(
                            call,
                            invoice_step,
                            &idem,
                            "/v1/invoices",
                            &form,
                            Some(("invoice", &id, Some(&cus), 0)),
                        )
                        .await?
                        .0
                    }
                }
            }
        };
        // Finalize there, unless it is already.
        let step = "finalize";
        let begun = self.begin(call, step, false).await?;
        if let Begin::Done(_) = begun {
            return Ok(());
        }
        let current = self
            .stripe
            .get(
                step,
                &format!("/v1/invoices/{stripe_invoice}"),
                &Form::new(),
            )
            .await?;
        let due = current.get("amount_due").and_then(Value::as_i64);
        if due != Some(invoice.content.amount_due_minor) {
            return Err(Failure::permanent(
                step,
                format!(
                    "Stripe's invoice {stripe_invoice} is due {due:?}, Tollgate's {} is due {}; not finalized",
                    id, invoice.content.amount_due_minor
                ),
            ));
        }
        let status = current.get("status").and_then(Value::as_str).unwrap_or("");
        let amount = invoice.content.amount_due_minor;
        if status != "draft" {
            self.intent(call, step, "recovered").await?;
            self.done(
                call,
                step,
                &stripe_invoice,
                Some(("invoice", &id, Some(&cus), amount)),
            )
            .await?;
            return Ok(());
        }
        let idem = idempotency_key(CallKind::PushInvoice, &id, call.version, "finalize");
        self.post_step(
            call,
            step,
            &idem,
            &format!("/v1/invoices/{stripe_invoice}/finalize"),
            &Form::new(),
            Some(("invoice", &id, Some(&cus), amount)),
        )
        .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_item(
        &self,
        call: &Call,
        cus: &str,
        currency: &str,
        invoice: &str,
        step: &str,
        description: &str,
        amount: i64,
    ) -> Result<(), Failure> {
        match self.begin(call, step, false).await? {
            Begin::Done(_) => return Ok(()),
            Begin::Send { recover: true } => {
                let line = step.to_owned();
                if let Some(found) = self
                    .stripe
                    .find(
                        step,
                        "/v1/invoiceitems",
                        &vec![("customer".into(), cus.to_owned())],
                        |o| {
                            metadata_is(o, METADATA_INVOICE, invoice)
                                && metadata_is(o, "tollgate_line", &line)
                        },
                    )
                    .await?
                {
                    self.done(call, step, &found, None).await?;
                    return Ok(());
                }
            }
            Begin::Send { recover: false } => {}
        }
        let form: Form = vec![
            ("customer".into(), cus.to_owned()),
            ("amount".into(), amount.to_string()),
            ("currency".into(), currency.to_owned()),
            ("description".into(), description.to_owned()),
            (format!("metadata[{METADATA_INVOICE}]"), invoice.to_owned()),
            ("metadata[tollgate_line]".into(), step.to_owned()),
        ];
        let idem = idempotency_key(CallKind::PushInvoice, invoice, call.version, step);
        self.post_step(call, step, &idem, "/v1/invoiceitems", &form, None)
            .await?;
        Ok(())
    }

    // ---- refunds ----

    /// Refunds (part of) the charge that paid the refund's invoice, in one step, `refund`. Its
    /// intent is written only while the refund is pending (so a cancel and a send never both
    /// happen); a lost answer is found again among the charge's refunds by the
    /// `tollgate_refund` metadata before the request is sent again with the same key.
    async fn create_refund(&self, call: &Call) -> Result<(), Failure> {
        let step = REFUND_STEP;
        let refund_id = call.object_id.clone();
        let recover = match self.begin(call, step, false).await? {
            Begin::Done(pid) => {
                // The step's outcome is recorded; read the refund back for its status (a crash
                // may have come between, or it was pending at the provider).
                let answer = self
                    .stripe
                    .get(step, &format!("/v1/refunds/{pid}"), &Vec::new())
                    .await?;
                return self.refund_done(call, &answer).await;
            }
            Begin::Send { recover } => recover,
        };
        let key = idempotency_key(CallKind::CreateRefund, &refund_id, call.version, step);
        let (cid, rid, k, now) = (call.id.clone(), refund_id.clone(), key.clone(), self.now());
        let begun = self
            .db(step, move |st| {
                match st.billing.begin_refund_step(&cid, &rid, &k, now) {
                    Ok(b) => Ok(Ok(b)),
                    Err(e @ BillingStoreError::Conflict { .. }) => Ok(Err(e.to_string())),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await?
            .map_err(|m| Failure::permanent(step, m))?;
        let (charge, amount_minor, invoice) = match begun {
            RefundBegin::Settled(_) => return Ok(()),
            RefundBegin::Send {
                charge,
                amount_minor,
                invoice,
            } => (charge, amount_minor, invoice),
        };
        let found = if recover {
            let filter: Form = vec![("charge".into(), charge.clone())];
            self.stripe
                .find(step, "/v1/refunds", &filter, |o| {
                    metadata_is(o, METADATA_REFUND, &refund_id)
                })
                .await?
        } else {
            None
        };
        let answer = match found {
            Some(pid) => {
                self.stripe
                    .get(step, &format!("/v1/refunds/{pid}"), &Vec::new())
                    .await?
            }
            None => {
                let form: Form = vec![
                    ("charge".into(), charge),
                    ("amount".into(), amount_minor.to_string()),
                    (format!("metadata[{METADATA_REFUND}]"), refund_id.clone()),
                    (format!("metadata[{METADATA_INVOICE}]"), invoice),
                ];
                let answer = self.stripe.post(step, "/v1/refunds", &form, &key).await?;
                self.fault(step);
                answer
            }
        };
        self.refund_done(call, &answer).await
    }

    /// Records a refund request's answer: the step's outcome and the refund's status.
    async fn refund_done(&self, call: &Call, answer: &Value) -> Result<(), Failure> {
        let step = REFUND_STEP;
        let pid = id_of(step, answer)?;
        let status = answer
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("pending")
            .to_owned();
        let failure = answer
            .get("failure_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (cid, rid, now) = (call.id.clone(), call.object_id.clone(), self.now());
        self.db(step, move |st| {
            st.billing
                .refund_step_done(&cid, &rid, &pid, &status, failure.as_deref(), now)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Marks a refund failed after the provider refused it for good.
    async fn refund_refused(&self, refund_id: &str, message: &str) {
        let (rid, m, now) = (refund_id.to_owned(), message.to_owned(), self.now());
        if let Err(f) = self
            .db(REFUND_STEP, move |st| {
                st.billing
                    .refund_refused(&rid, &m, now)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .await
        {
            tracing::error!(refund = %refund_id, "recording a refused refund failed: {}", f.message);
        }
    }
}
