import { createContext, useContext } from 'react';
import { ToastStore } from '../lib/notifications';
import { PresenceStore, TypingStore } from '../realtime/LiveState';
import { StatsHistory } from '../realtime/StatsHistory';
import type { TabRole } from '../realtime/TabCoordinator';
import type { TopicError } from '../realtime/topics';
import type { ClientMessage } from '../realtime/messages';
import type { ConnectionStatus } from '../realtime/types';

export interface RealtimeState {
  status: ConnectionStatus;
  role: TabRole;
  reconnect: () => void;
  history: StatsHistory;
  /** Sends a client message (typing…) on the shared socket. */
  send: (message: ClientMessage) => boolean;
  presence: PresenceStore;
  typing: TypingStore;
  toasts: ToastStore;
  topicError: TopicError | null;
}

export const RealtimeContext = createContext<RealtimeState>({
  status: 'offline',
  role: 'pending',
  reconnect: () => {},
  history: new StatsHistory(),
  send: () => false,
  presence: new PresenceStore(),
  typing: new TypingStore(),
  toasts: new ToastStore(),
  topicError: null,
});

export const useRealtime = () => useContext(RealtimeContext);
