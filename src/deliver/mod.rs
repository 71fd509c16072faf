//! Delivery to webhook endpoints. So far: Standard Webhooks signing; the HTTP
//! dispatcher, retry policy and dead letters build on it.

pub mod sign;
