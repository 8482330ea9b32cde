"""Online reinforcement learning on point clouds: rewards, the policy objective, rollouts and the loop."""
