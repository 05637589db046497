import { createContext, useContext } from 'react';
import { ToastStore } from '../lib/notifications';
import { PresenceStore, TypingStore } from '../realtime/LiveState';
import { StatsHistory } from '../realtime/StatsHistory';
import type { TabRole } from '../realtime/TabCoordinator';
import type { TopicError } from '../realtime/topics';
import type { ClientMessage } from '../realtime/messages';
import type { ConnectionStatus, Transport } from '../realtime/types';

export interface RealtimeState {
  status: ConnectionStatus;
  /** WebSocket, or the Server-Sent Events fallback. */
  transport: Transport;
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
  transport: 'websocket',
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
