/// How one result counts for a breaker, a retry policy or an adaptive limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call worked; it counts towards closing a breaker and raising a limit.
    Success,
    /// The call failed in a way that says the dependency is unhealthy.
    Failure,
    /// The result says nothing about the dependency's health (a client error,
    /// a "not found", a cancelled call) and is not counted either way.
    Ignored,
}

/// Decides whether a result is a [`Success`](Outcome::Success), a
/// [`Failure`](Outcome::Failure) or [`Ignored`](Outcome::Ignored).
///
/// Breakers, retry policies and adaptive limiters all take a classifier, so a
/// service classifies its errors once. Any `Fn(&Result<T, E>) -> Outcome` is a
/// classifier; [`DefaultClassifier`] counts every `Err` as a failure.
///
/// ```
/// use weft_core::{Classify, DefaultClassifier, Outcome};
///
/// #[derive(Debug)]
/// enum HttpError { NotFound, Unavailable }
///
/// // A 404 says nothing about the dependency's health; a 503 does.
/// let classify = |r: &Result<u16, HttpError>| match r {
///     Ok(_) => Outcome::Success,
///     Err(HttpError::NotFound) => Outcome::Ignored,
///     Err(HttpError::Unavailable) => Outcome::Failure,
/// };
/// assert_eq!(classify.classify(&Err(HttpError::NotFound)), Outcome::Ignored);
/// assert_eq!(classify.classify(&Err(HttpError::Unavailable)), Outcome::Failure);
/// assert_eq!(DefaultClassifier.classify(&Ok::<_, HttpError>(200)), Outcome::Success);
/// ```
pub trait Classify<T, E> {
    /// Classifies one result.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// The classifier used when none is given: `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl<T, E> Classify<T, E> for DefaultClassifier {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classifier() {
        assert_eq!(
            DefaultClassifier.classify(&Ok::<u8, ()>(1)),
            Outcome::Success
        );
        assert_eq!(
            DefaultClassifier.classify(&Err::<u8, ()>(())),
            Outcome::Failure
        );
    }

    #[test]
    fn closures_classify() {
        let only_timeouts = |r: &Result<(), &str>| match r {
            Err(e) if *e == "timeout" => Outcome::Failure,
            Err(_) => Outcome::Ignored,
            Ok(()) => Outcome::Success,
        };
        assert_eq!(only_timeouts.classify(&Err("timeout")), Outcome::Failure);
        assert_eq!(only_timeouts.classify(&Err("bad input")), Outcome::Ignored);
        assert_eq!(only_timeouts.classify(&Ok(())), Outcome::Success);
    }
}
