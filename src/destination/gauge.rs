//! The `jetpost_destination_clients{type}` gauge: the clients destination types keep open
//! (an AWS SDK client, a broker connection), each counted for as long as it lives.

/// One kept client in the gauge; dropping it takes the client out.
pub struct Counted(&'static str);

impl Counted {
    /// Counts one client of destination type `kind`.
    pub fn new(kind: &'static str) -> Counted {
        metrics::gauge!("jetpost_destination_clients", "type" => kind).increment(1.0);
        Counted(kind)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!("jetpost_destination_clients", "type" => self.0).decrement(1.0);
    }
}
