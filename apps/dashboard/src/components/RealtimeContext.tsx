import { createContext, useContext } from 'react';
import { StatsHistory } from '../realtime/StatsHistory';
import type { TabRole } from '../realtime/TabCoordinator';
import type { ConnectionStatus } from '../realtime/types';

export interface RealtimeState {
  status: ConnectionStatus;
  role: TabRole;
  reconnect: () => void;
  history: StatsHistory;
}

export const RealtimeContext = createContext<RealtimeState>({
  status: 'offline',
  role: 'pending',
  reconnect: () => {},
  history: new StatsHistory(),
});

export const useRealtime = () => useContext(RealtimeContext);
