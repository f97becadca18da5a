//! Host-side simulated machines for pvops tests.
