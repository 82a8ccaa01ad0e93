export { Notification, type NotificationStatus } from './notification';
export { Recipient, type RecipientStatus } from './recipient';
export { Advertisement } from './advertisement';
export { AdView } from './ad-view';
export { Message } from './message';
export { BumpRun, type BumpTrigger } from './bump-run';
export { Product } from './product';
export { Order } from './order';
export { OrderItem } from './order-item';
