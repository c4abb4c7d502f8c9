//! The response future of [`LoadShed`](super::LoadShed).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use weft_core::BoxError;

use crate::error::Overloaded;

pin_project_lite::pin_project! {
    /// Either the inner service's response or an immediate
    /// [`Overloaded`] error.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] fut: F },
        Overloaded,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(fut: F) -> Self {
        ResponseFuture {
            state: State::Called { fut },
        }
    }

    pub(crate) fn overloaded() -> Self {
        ResponseFuture {
            state: State::Overloaded,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut } => Poll::Ready(ready!(fut.poll(cx)).map_err(Into::into)),
            StateProj::Overloaded => Poll::Ready(Err(Box::new(Overloaded::new()))),
        }
    }
}
