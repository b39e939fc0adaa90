//! How a request ended, read from what the [exchange](crate::exchange) returned, in the
//! words of the access log and the metrics (HAProxy's termination states, see
//! [`Term`]). The fronts call [`note`] once per exchange, before they turn the result
//! into their protocol; it only reads the result and writes the request's [`Trace`].

use crate::exchange::{Exchanged, Failure};
use crate::trace::{Term, Trace};

/// Notes in `trace` how the exchange ended.
pub fn note(trace: &Trace, result: &Result<Exchanged, Failure>) {
    let leased = trace.lease.get().is_some();
    let term = match result {
        Ok(_) => Term::Normal,
        Err(Failure::Answer { status, .. }) => match (*status, leased) {
            (502, false) => Term::ConnectRefused,
            (504, false) => Term::ConnectTimeout,
            (503, _) => Term::Resource,
            (504, true) => Term::ServerTimeout,
            (400, _) => Term::BadBody,
            _ => Term::ServerHeaders,
        },
        Err(Failure::ClientGone) => Term::ClientHeaders,
        Err(Failure::Broken {
            client_gone: true, ..
        }) => Term::ClientData,
        Err(Failure::Broken { .. }) => Term::ServerData,
    };
    trace.set_term(term);
}
