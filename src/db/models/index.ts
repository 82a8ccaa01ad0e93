export { Notification, type NotificationStatus } from './notification';
export { Recipient, type RecipientStatus } from './recipient';
