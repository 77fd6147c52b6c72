"""A DQN update with a target network synced by load_state_dict and run under no_grad."""

import copy

import torch
from torch import nn

torch.manual_seed(0)
policy = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
target = copy.deepcopy(policy)
target.load_state_dict(policy.state_dict())
optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
gamma = 0.99

for step in range(6):
    states, next_states = torch.randn(16, 4), torch.randn(16, 4)
    actions = torch.randint(0, 2, (16, 1))
    rewards, done = torch.randn(16), torch.zeros(16)
    q = policy(states).gather(1, actions).squeeze(1)
    with torch.no_grad():
        next_q = target(next_states).max(1).values
    expected = rewards + gamma * next_q * (1 - done)
    loss = nn.functional.smooth_l1_loss(q, expected)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 3 == 2:
        target.load_state_dict(policy.state_dict())
