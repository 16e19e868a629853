//! The wardgate gateway agent.
